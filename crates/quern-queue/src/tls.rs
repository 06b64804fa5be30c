//! TLS for `amqps://` URLs, configured by the URL itself so that one `QUERN_AMQP_URL` serves every binary and
//! producer: the query parameters of RabbitMQ's own (Erlang) client, which the Python and TypeScript producers
//! read too.
//!
//! | parameter | meaning |
//! |---|---|
//! | `cacertfile` | PEM file of the CA certificates to trust, and only those (like libpq's `sslrootcert`); without it, the system's trust store (`/etc/ssl/certs` on Debian, or `SSL_CERT_FILE` / `SSL_CERT_DIR`) |
//! | `certfile`, `keyfile` | PEM client certificate (chain) and its unencrypted private key (PKCS#8, PKCS#1 or SEC1), for brokers that ask for one; both or neither |
//! | `verify` | `verify_peer` (the default): the broker's certificate must chain to a trusted CA and name the host; `verify_none`: anything goes (tests only; a warning is logged on every connection) |
//! | `server_name_indication` | the name to send (SNI) and to check the certificate against, instead of the URL's host (connecting by IP address or through a tunnel) |
//!
//! lapin ignores query parameters it does not know, so the URL reaches it as it is. The handshake is rustls'
//! (the backend lapin is built with here; no OpenSSL), through lapin's own connector hook, so that `cacertfile`
//! replaces the system's roots instead of adding to them and `verify_none` is possible. Files are read on every
//! connect: a renewed certificate is picked up by the next reconnect.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use lapin::tcp::{RustlsConnector, RustlsConnectorConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{AlertDescription, CertificateError, DigitallySignedStruct, SignatureScheme};

use crate::QueueError;

/// The TLS settings an AMQP URL carries in its query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// `cacertfile`: the only CAs trusted; `None` trusts the system's store.
    pub ca_file: Option<PathBuf>,
    /// `certfile` and `keyfile`: the client certificate, when the broker asks for one.
    pub client_certificate: Option<(PathBuf, PathBuf)>,
    /// `verify`: whether the broker's certificate is checked (`verify_peer`, the default).
    pub verify_peer: bool,
    /// `server_name_indication`: the name checked and sent instead of the URL's host.
    pub server_name: Option<String>,
}

const PARAMETERS: [&str; 5] = ["cacertfile", "certfile", "keyfile", "verify", "server_name_indication"];

impl TlsSettings {
    /// The TLS settings of `url`: `None` for an `amqp://` URL, which must then carry no TLS parameter (it would
    /// be ignored, and the connection unencrypted).
    pub fn from_url(url: &str) -> Result<Option<TlsSettings>, QueueError> {
        let tls = url.get(..8).is_some_and(|scheme| scheme.eq_ignore_ascii_case("amqps://"));
        let mut values: [Option<String>; 5] = Default::default();
        for (key, value) in query_pairs(url) {
            let Some(index) = PARAMETERS.iter().position(|name| *name == key) else { continue };
            if !tls {
                return Err(QueueError::Tls(format!("{key} needs an amqps:// URL (amqp:// is never encrypted)")));
            }
            if values[index].replace(value).is_some() {
                return Err(QueueError::Tls(format!("{key} is given twice")));
            }
        }
        if !tls {
            return Ok(None);
        }
        let [ca_file, cert_file, key_file, verify, server_name] = values;
        let path = |key: &str, value: Option<String>| match value {
            Some(value) if value.is_empty() => Err(QueueError::Tls(format!("{key} is empty"))),
            value => Ok(value.map(PathBuf::from)),
        };
        let client_certificate = match (path("certfile", cert_file)?, path("keyfile", key_file)?) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            (Some(_), None) => return Err(QueueError::Tls("certfile is given without keyfile".into())),
            (None, Some(_)) => return Err(QueueError::Tls("keyfile is given without certfile".into())),
        };
        let verify_peer = match verify.as_deref() {
            None | Some("verify_peer") => true,
            Some("verify_none") => false,
            Some(other) => {
                return Err(QueueError::Tls(format!("verify must be verify_peer or verify_none, not `{other}`")))
            }
        };
        if let Some(name) = &server_name {
            if name == "disable" {
                return Err(QueueError::Tls(
                    "server_name_indication=disable is not supported: give the name the broker's certificate is \
                     for, or leave the parameter out to use the URL's host"
                        .into(),
                ));
            }
            if ServerName::try_from(name.as_str()).is_err() {
                return Err(QueueError::Tls(format!("server_name_indication `{name}` is not a host name")));
            }
        }
        Ok(Some(TlsSettings { ca_file: path("cacertfile", ca_file)?, client_certificate, verify_peer, server_name }))
    }

    /// A connector with these settings, the files read now: each unreadable or unusable file is named.
    pub fn connector(&self) -> Result<RustlsConnector, QueueError> {
        let identity = match &self.client_certificate {
            Some((cert, key)) => Some((read_certificates("certfile", cert)?, read_key(key)?)),
            None => None,
        };
        let config = match (&self.ca_file, self.verify_peer) {
            (_, false) => return accept_any_certificate(identity),
            (Some(ca_file), true) => {
                RustlsConnectorConfig::default().with_parsable_certificates(read_certificates("cacertfile", ca_file)?)
            }
            (None, true) => RustlsConnectorConfig::new_with_platform_verifier(),
        };
        let connector = match identity {
            Some((chain, key)) => config.connector_with_single_cert(chain, key),
            None => config.connector_with_no_client_auth(),
        };
        connector.map_err(|error| QueueError::Tls(self.setup_error(&error)))
    }

    fn setup_error(&self, error: &std::io::Error) -> String {
        let reason = quern_core::error_text::io_error(error);
        match (&self.client_certificate, &self.ca_file) {
            (Some((cert, key)), _) if matches!(rustls_error(error), Some(rustls::Error::InconsistentKeys(_))) => {
                format!("keyfile {} is not the key of certfile {}: {reason}", key.display(), cert.display())
            }
            (_, Some(ca_file)) => format!("cannot use cacertfile {}: {reason}", ca_file.display()),
            _ => format!("cannot set up TLS: {reason}"),
        }
    }

    /// `error`, from connecting with these settings, in an operator's words with what to check, when it is a
    /// TLS failure (a refused certificate, either way); `None` otherwise.
    pub fn explain(&self, error: &std::io::Error, host: &str) -> Option<String> {
        let name = self.server_name.as_deref().unwrap_or(host);
        let client_certificate = match &self.client_certificate {
            Some((cert, _)) => format!("the broker refused the client certificate {}", cert.display()),
            None => "the broker wants a client certificate: give certfile and keyfile".to_owned(),
        };
        let Some(tls) = rustls_error(error) else {
            // With TLS 1.3 the broker checks the client's certificate after the client has finished its handshake:
            // its alert and the close of the connection race the client's first write, and the client may see the
            // reset instead of the alert.
            use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
            return matches!(error.kind(), ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof).then(
                || {
                    let reason = quern_core::error_text::io_error(error);
                    let question = match &self.client_certificate {
                        Some((cert, _)) => format!("does it refuse the client certificate {}?", cert.display()),
                        None => "does it want a client certificate (certfile and keyfile)?".to_owned(),
                    };
                    format!("TLS with `{name}` failed: the broker closed the connection as it opened ({reason}): {question}")
                },
            );
        };
        let trusted = match &self.ca_file {
            Some(ca_file) => format!("the CA in cacertfile {}", ca_file.display()),
            None => "a CA the system trusts (give the broker's CA with cacertfile=/path/to/ca.pem)".to_owned(),
        };
        let hint = match tls {
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
                format!("the broker's certificate is not signed by {trusted}")
            }
            rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ) => format!(
                "the broker's certificate is not for `{name}`: use a name it is for, as the URL's host or as \
                 server_name_indication=NAME"
            ),
            rustls::Error::AlertReceived(
                AlertDescription::CertificateRequired
                | AlertDescription::BadCertificate
                | AlertDescription::UnknownCA
                | AlertDescription::CertificateUnknown
                | AlertDescription::UnsupportedCertificate
                | AlertDescription::AccessDenied
                | AlertDescription::HandshakeFailure,
            ) => client_certificate,
            _ => return Some(format!("TLS with `{name}` failed: {tls}")),
        };
        Some(format!("TLS with `{name}` failed: {hint} ({tls})"))
    }
}

/// The rustls error inside an I/O error, as rustls-connector and futures-rustls report them.
fn rustls_error(error: &std::io::Error) -> Option<&rustls::Error> {
    error.get_ref()?.downcast_ref::<rustls::Error>()
}

/// `key=value` pairs of the URL's query, decoded as lapin's URL parser decodes them (`%XX`, `+` as a space).
fn query_pairs(url: &str) -> impl Iterator<Item = (String, String)> + '_ {
    let query = url.split_once('?').map_or("", |(_, query)| query);
    let query = query.split_once('#').map_or(query, |(query, _)| query);
    query.split('&').filter(|pair| !pair.is_empty()).map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(key), decode(value))
    })
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |at: usize| bytes.get(at).and_then(|b| (*b as char).to_digit(16));
        match (bytes[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
                continue;
            }
            (b'+', _, _) => out.push(b' '),
            (byte, _, _) => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn read(key: &str, path: &Path) -> Result<Vec<u8>, QueueError> {
    std::fs::read(path).map_err(|error| {
        QueueError::Tls(format!("cannot read {key} {}: {}", path.display(), quern_core::error_text::io_error(&error)))
    })
}

fn read_certificates(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, QueueError> {
    let pem = read(key, path)?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| QueueError::Tls(format!("{key} {} is not valid PEM: {error}", path.display())))?;
    if certificates.is_empty() {
        return Err(QueueError::Tls(format!("{key} {} holds no PEM certificate", path.display())));
    }
    Ok(certificates)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, QueueError> {
    let pem = read("keyfile", path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|error| {
        let encrypted = String::from_utf8_lossy(&pem).contains("ENCRYPTED");
        let why =
            if encrypted { "it is encrypted; decrypt it with `openssl pkey`".to_owned() } else { error.to_string() };
        QueueError::Tls(format!(
            "keyfile {} holds no usable private key (PEM PKCS#8, PKCS#1 or SEC1 expected; {why})",
            path.display()
        ))
    })
}

type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// `verify=verify_none`: a connector that takes whatever certificate the broker shows. The handshake's signatures
/// are still checked (the broker holds the key of the certificate it shows); who the broker is, is not.
fn accept_any_certificate(identity: Option<Identity>) -> Result<RustlsConnector, QueueError> {
    let provider = CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    let setup = |error: rustls::Error| QueueError::Tls(format!("cannot set up TLS: {error}"));
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(setup)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)));
    let config = match identity {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).map_err(setup)?,
        None => builder.with_no_client_auth(),
    };
    Ok(RustlsConnector::from(config))
}

#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str) -> Result<Option<TlsSettings>, String> {
        TlsSettings::from_url(url).map_err(|error| error.to_string())
    }

    #[test]
    fn plain_urls_have_no_tls_and_refuse_tls_parameters() {
        assert_eq!(settings("amqp://guest:guest@h:5672/%2f?heartbeat=10"), Ok(None));
        let error = settings("amqp://h/%2f?cacertfile=/ca.pem").expect_err("plain");
        assert_eq!(
            error,
            "invalid RabbitMQ TLS settings: cacertfile needs an amqps:// URL (amqp:// is never encrypted)"
        );
    }

    #[test]
    fn the_erlang_clients_parameters_are_read() {
        let url = "amqps://u:p@mq.example.com:5671/%2f?heartbeat=30&cacertfile=%2Fetc%2Fquern%2Fca.pem\
                   &certfile=/c.pem&keyfile=/k.pem&verify=verify_none&server_name_indication=mq.internal";
        assert_eq!(
            settings(url),
            Ok(Some(TlsSettings {
                ca_file: Some("/etc/quern/ca.pem".into()),
                client_certificate: Some(("/c.pem".into(), "/k.pem".into())),
                verify_peer: false,
                server_name: Some("mq.internal".into()),
            }))
        );
        let bare = settings("AMQPS://h").expect("valid").expect("tls");
        assert!(bare.verify_peer && bare.ca_file.is_none() && bare.client_certificate.is_none());
    }

    #[test]
    fn mistakes_are_named() {
        for (query, expected) in [
            ("certfile=/c.pem", "certfile is given without keyfile"),
            ("keyfile=/k.pem", "keyfile is given without certfile"),
            ("verify=yes", "verify must be verify_peer or verify_none, not `yes`"),
            ("cacertfile=", "cacertfile is empty"),
            ("cacertfile=/a&cacertfile=/b", "cacertfile is given twice"),
            ("server_name_indication=a%20b", "server_name_indication `a b` is not a host name"),
        ] {
            let error = settings(&format!("amqps://u:s3cret@h/%2f?{query}")).expect_err(query);
            assert_eq!(error, format!("invalid RabbitMQ TLS settings: {expected}"));
        }
        assert!(settings("amqps://h?server_name_indication=disable").expect_err("disable").contains("not supported"));
    }

    #[test]
    fn unreadable_files_are_named() {
        let missing = TlsSettings::from_url("amqps://h?cacertfile=/nonexistent/ca.pem").expect("valid").expect("tls");
        let error = missing.connector().expect_err("missing file").to_string();
        assert_eq!(
            error,
            "invalid RabbitMQ TLS settings: cannot read cacertfile /nonexistent/ca.pem: no such file or directory"
        );
        let not_pem = std::env::temp_dir().join(format!("quern-not-pem-{}", std::process::id()));
        std::fs::write(&not_pem, "hello").expect("write");
        let url = format!("amqps://h?cacertfile={}", not_pem.display());
        let error = TlsSettings::from_url(&url).expect("valid").expect("tls").connector().expect_err("no cert");
        assert_eq!(
            error.to_string(),
            format!("invalid RabbitMQ TLS settings: cacertfile {} holds no PEM certificate", not_pem.display())
        );
        let url = format!("amqps://h?certfile={0}&keyfile={0}", not_pem.display());
        let error = TlsSettings::from_url(&url).expect("valid").expect("tls").connector().expect_err("no cert");
        assert!(error.to_string().contains("certfile"), "{error}");
        std::fs::remove_file(&not_pem).ok();
    }

    #[test]
    fn a_reset_as_the_connection_opens_asks_about_the_client_certificate() {
        let with = TlsSettings::from_url("amqps://h?certfile=/c.pem&keyfile=/k.pem").expect("valid").expect("tls");
        let reset = std::io::Error::from_raw_os_error(104);
        assert_eq!(
            with.explain(&reset, "h").as_deref(),
            Some(
                "TLS with `h` failed: the broker closed the connection as it opened (connection reset by peer): does \
                 it refuse the client certificate /c.pem?"
            )
        );
        let without = TlsSettings::from_url("amqps://h").expect("valid").expect("tls");
        assert!(without
            .explain(&reset, "h")
            .expect("a TLS hint")
            .ends_with("does it want a client certificate (certfile and keyfile)?"));
        assert_eq!(without.explain(&std::io::Error::from_raw_os_error(111), "h"), None, "refused: not TLS");
    }

    #[test]
    fn decoding_follows_form_urlencoding() {
        assert_eq!(decode("a%2Fb+c%zz%4"), "a/b c%zz%4");
    }
}
