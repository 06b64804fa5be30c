//! TLS to Postgres as libpq does it: the connection string's `sslmode`, `sslrootcert`, `sslcert` and `sslkey`
//! decide; rustls on aws-lc-rs (the provider the rest of Quern already builds) does the work, no OpenSSL.
//!
//! | sslmode | TLS | the server's certificate |
//! |---|---|---|
//! | `disable` | never | - |
//! | `allow`, `prefer` (default) | if the server offers it | as `require` |
//! | `require` | always | not checked; but given a root certificate, checked as `verify-ca` (libpq's rule) |
//! | `verify-ca` | always | signed by a CA of `sslrootcert` |
//! | `verify-full` | always | signed by a CA of `sslrootcert`, and made out to the host name connected to |
//!
//! - `sslrootcert`: a PEM file of CA certificates, or `system` for the system's (`SSL_CERT_FILE` and
//!   `SSL_CERT_DIR` are honoured); with `system` the default sslmode is `verify-full` and weaker ones are refused,
//!   as in libpq 16. Left out: `~/.postgresql/root.crt` if that exists, else `verify-*` fails naming the setting.
//! - `sslcert`, `sslkey`: a client certificate (PEM, chain allowed) and its key (PEM: PKCS#8, RSA or EC); by
//!   default `~/.postgresql/postgresql.crt` and `.key`, used when the certificate file exists.
//!
//! Where Quern differs from libpq: a file the string names but that cannot be read is an error (libpq goes on
//! without it, unchecked); files are read once, when the store is built, so a rotated certificate needs a restart;
//! the key file's permissions are not checked, nor are `PGSSLMODE` and the other environment variables read; an
//! encrypted key (`sslpassword`) is not supported; `prefer` does not retry without TLS after a failed handshake;
//! host names are matched against the certificate's subjectAltName only, not its common name.

mod params;
mod verify;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{AlertDescription, CertificateError, ClientConfig, RootCertStore};
use tokio_postgres_rustls::MakeRustlsConnect;

pub(crate) use params::SslMode;

use crate::StoreError;

/// How the store's connections are secured: the connector for the pool and for cancel requests, and the words
/// for a failed handshake.
#[derive(Clone)]
pub(crate) struct Tls {
    mode: SslMode,
    connector: MakeRustlsConnect,
    /// `sslmode=verify-full, sslrootcert=/ca.pem`, for messages.
    settings: Arc<str>,
    /// Where the trusted CA certificates come from, for messages: a file, or the system's.
    roots: Option<Arc<str>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl Tls {
    /// Takes the TLS parameters out of the connection string `conn` and reads the files they name. Returns the
    /// rest of the string, for tokio-postgres, and the TLS settings.
    pub(crate) fn from_connection_string(conn: &str) -> Result<(String, Tls), StoreError> {
        let (rest, params) = params::take(conn)?;
        let home = std::env::var_os("HOME").map(PathBuf::from);
        Ok((rest, Tls::new(&params, home.as_deref())?))
    }

    fn new(params: &params::TlsParams, home: Option<&Path>) -> Result<Tls, StoreError> {
        let system = params.sslrootcert.as_deref() == Some("system");
        let mode = params.sslmode.unwrap_or(if system { SslMode::VerifyFull } else { SslMode::Prefer });
        if system && mode != SslMode::VerifyFull {
            return Err(config(format!(
                "sslmode={} may not be used with sslrootcert=system, which trusts every public CA: use \
                 sslmode=verify-full",
                mode.as_str()
            )));
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let default_file = |name: &str| home.map(|home| home.join(".postgresql").join(name)).filter(|f| f.is_file());

        // With `disable` no file is read: a connection never uses them.
        let (roots, roots_from) = match params.sslrootcert.as_deref() {
            _ if mode == SslMode::Disable => (None, None),
            Some("system") => (Some(system_roots()?), Some("the system's CA certificates".to_owned())),
            Some(file) => (Some(read_roots(Path::new(file))?), Some(file.to_owned())),
            None => match default_file("root.crt") {
                Some(file) => (Some(read_roots(&file)?), Some(file.display().to_string())),
                None => (None, None),
            },
        };
        let verifier: Arc<dyn ServerCertVerifier> = match (mode, roots) {
            (SslMode::VerifyFull, Some(roots)) => WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|error| config(format!("sslrootcert: {error}")))?,
            (SslMode::VerifyCa | SslMode::VerifyFull, None) => {
                return Err(config(format!(
                    "sslmode={} needs the CA certificates to trust: set sslrootcert=/path/to/ca.pem in the database \
                     URL (or sslrootcert=system for the system's), or put them in ~/.postgresql/root.crt",
                    mode.as_str()
                )))
            }
            (_, roots) => Arc::new(verify::ChainOnly::new(roots, provider.signature_verification_algorithms)),
        };

        let client_certificate = match params.sslcert.clone().or_else(|| default_file("postgresql.crt")) {
            _ if mode == SslMode::Disable => None,
            None if params.sslkey.is_some() => {
                return Err(config("sslkey is set but there is no client certificate: set sslcert too"));
            }
            None => None,
            Some(cert) => {
                let key = params
                    .sslkey
                    .clone()
                    .or_else(|| home.map(|home| home.join(".postgresql/postgresql.key")))
                    .ok_or_else(|| config("sslcert is set but sslkey is not"))?;
                Some((cert, key))
            }
        };

        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| config(format!("TLS: {error}")))?
            // The verifiers above are libpq's modes; `verify-full`'s is rustls' own.
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut tls = match &client_certificate {
            Some((cert, key)) => builder.with_client_auth_cert(read_chain(cert)?, read_key(key)?).map_err(|error| {
                config(format!("sslcert {} and sslkey {} do not go together: {error}", cert.display(), key.display()))
            })?,
            None => builder.with_no_client_auth(),
        };
        // What libpq 17 sends: needed for `sslnegotiation=direct`, ignored by older servers.
        tls.alpn_protocols = vec![b"postgresql".to_vec()];

        let mut settings = format!("sslmode={}", mode.as_str());
        if let Some(roots) = &roots_from {
            settings.push_str(&format!(", sslrootcert={roots}"));
        }
        if let Some((cert, _)) = &client_certificate {
            settings.push_str(&format!(", sslcert={}", cert.display()));
        }
        Ok(Tls {
            mode,
            connector: MakeRustlsConnect::new(tls),
            settings: settings.into(),
            roots: roots_from.map(Arc::from),
        })
    }

    /// The connector, for the pool and for cancel requests (a TLS-only server refuses a plain cancel).
    pub(crate) fn connector(&self) -> MakeRustlsConnect {
        self.connector.clone()
    }

    /// The mode tokio-postgres is given.
    pub(crate) fn driver_mode(&self) -> tokio_postgres::config::SslMode {
        self.mode.driver()
    }

    /// A failed connection in an operator's words when TLS is the cause: what failed and which settings were
    /// asked for. `None` when TLS is not the cause.
    pub(crate) fn explain(&self, error: &tokio_postgres::Error) -> Option<String> {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(current) = cause {
            // tokio-rustls hands rustls' errors over inside an `io::Error`.
            let tls = current
                .downcast_ref::<rustls::Error>()
                .or_else(|| current.downcast_ref::<std::io::Error>()?.get_ref()?.downcast_ref::<rustls::Error>());
            if let Some(tls) = tls {
                return Some(format!("TLS handshake failed ({}): {}", self.settings, self.plain(tls)));
            }
            // tokio-postgres's words when the server answers the TLS request with "no".
            if current.to_string() == "server does not support TLS" {
                return Some(format!("the server does not offer TLS, which {} requires", self.settings));
            }
            cause = current.source();
        }
        None
    }

    fn plain(&self, error: &rustls::Error) -> String {
        let roots = self.roots.as_deref().unwrap_or("sslrootcert");
        let certificate = match error {
            rustls::Error::InvalidCertificate(certificate) => certificate,
            rustls::Error::AlertReceived(AlertDescription::CertificateRequired) => {
                return "the server asks for a client certificate: set sslcert and sslkey".to_owned()
            }
            rustls::Error::AlertReceived(
                alert @ (AlertDescription::UnknownCA
                | AlertDescription::BadCertificate
                | AlertDescription::CertificateUnknown
                | AlertDescription::CertificateExpired
                | AlertDescription::AccessDenied),
            ) => return format!("the server refused the client certificate ({alert:?})"),
            other => return other.to_string(),
        };
        match certificate {
            CertificateError::UnknownIssuer => {
                format!("the server's certificate is not signed by a CA in {roots} (unknown issuer)")
            }
            CertificateError::NotValidForNameContext { expected, presented } => format!(
                "the server's certificate is not made out to host name {} but to {}: connect by that name, or \
                 use sslmode=verify-ca to check the CA alone",
                expected.to_str(),
                presented.iter().map(|name| subject_name(name)).collect::<Vec<_>>().join(", ")
            ),
            CertificateError::NotValidForName => {
                "the server's certificate is not made out to the host name connected to".to_owned()
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the server's certificate has expired".to_owned()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the server's certificate is not valid yet (is this machine's clock right?)".to_owned()
            }
            other => format!("the server's certificate is refused: {other}"),
        }
    }
}

/// `DnsName("db.internal")` → `db.internal`, `IpAddress(10.0.0.5)` → `10.0.0.5`.
fn subject_name(name: &str) -> &str {
    name.strip_prefix("DnsName(\"")
        .and_then(|n| n.strip_suffix("\")"))
        .or_else(|| name.strip_prefix("IpAddress(").and_then(|n| n.strip_suffix(')')))
        .unwrap_or(name)
}

fn config(message: impl Into<String>) -> StoreError {
    StoreError::Config(message.into())
}

/// The whole file, or an error naming it and the setting that points at it.
fn read(setting: &str, file: &Path) -> Result<Vec<u8>, StoreError> {
    std::fs::read(file).map_err(|error| {
        config(format!("{setting}: cannot read {}: {}", file.display(), quern_core::error_text::io_error(&error)))
    })
}

fn read_roots(file: &Path) -> Result<Arc<RootCertStore>, StoreError> {
    let pem = read("sslrootcert", file)?;
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(&pem) {
        let certificate = certificate
            .map_err(|error| config(format!("sslrootcert: {} is not valid PEM: {error}", file.display())))?;
        roots.add(certificate).map_err(|error| {
            config(format!("sslrootcert: {} holds a certificate that cannot be used: {error}", file.display()))
        })?;
    }
    if roots.is_empty() {
        return Err(config(format!("sslrootcert: {} holds no PEM certificate", file.display())));
    }
    Ok(Arc::new(roots))
}

fn system_roots() -> Result<Arc<RootCertStore>, StoreError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    // Like browsers and libpq, skip a system certificate that cannot be parsed rather than fail on it.
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        let why = found.errors.first().map(|error| format!(" ({error})")).unwrap_or_default();
        return Err(config(format!(
            "sslrootcert=system: no CA certificates found on this system{why}; install the ca-certificates \
             package, or set SSL_CERT_FILE"
        )));
    }
    Ok(Arc::new(roots))
}

fn read_chain(file: &Path) -> Result<Vec<CertificateDer<'static>>, StoreError> {
    let pem = read("sslcert", file)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| config(format!("sslcert: {} is not valid PEM: {error}", file.display())))?;
    if chain.is_empty() {
        return Err(config(format!("sslcert: {} holds no PEM certificate", file.display())));
    }
    Ok(chain)
}

fn read_key(file: &Path) -> Result<PrivateKeyDer<'static>, StoreError> {
    let pem = read("sslkey", file)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|error| {
        config(format!(
            "sslkey: {} holds no usable private key ({error}); an unencrypted PEM key is needed (PKCS#8, RSA or EC)",
            file.display()
        ))
    })
}

#[cfg(test)]
mod tests;
