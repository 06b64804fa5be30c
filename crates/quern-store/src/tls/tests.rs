//! The settings alone, without a server: defaults, refusals and the words of errors (the handshakes are in
//! `tests/tls.rs`, against a TLS-only PgBouncer).

use std::path::{Path, PathBuf};

use rustls::pki_types::ServerName;

use super::*;

/// A directory of its own, removed at the end.
struct Dir(PathBuf);

impl Dir {
    fn new() -> Dir {
        let dir = std::env::temp_dir().join(format!("quern-tls-unit-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        Dir(dir)
    }

    /// Writes a self-signed certificate and its key as `<name>.crt` and `<name>.key`.
    fn certificate(&self, name: &str) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap().self_signed(&key).unwrap();
        let (cert_file, key_file) = (self.0.join(format!("{name}.crt")), self.0.join(format!("{name}.key")));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        (cert_file, key_file)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tls(conn: &str, home: Option<&Path>) -> Result<Tls, StoreError> {
    let (_, params) = params::take(conn)?;
    Tls::new(&params, home)
}

fn error(conn: &str, home: Option<&Path>) -> String {
    tls(conn, home).expect_err("refused").to_string()
}

#[test]
fn prefer_is_the_default_and_reads_no_file_it_is_not_given() {
    let home = Dir::new();
    let tls = tls("postgres://u@h/d", Some(&home.0)).expect("valid");
    assert_eq!((tls.mode, &*tls.settings), (SslMode::Prefer, "sslmode=prefer"));
    assert_eq!(tls.driver_mode(), tokio_postgres::config::SslMode::Prefer);
}

#[test]
fn verify_modes_without_a_root_certificate_name_the_setting() {
    let home = Dir::new();
    for mode in ["verify-ca", "verify-full"] {
        let message = error(&format!("postgres://u@h/d?sslmode={mode}"), Some(&home.0));
        assert!(message.contains(&format!("sslmode={mode} needs")) && message.contains("sslrootcert="), "{message}");
    }
    assert!(error("postgres://u@h/d?sslmode=verify-full", None).contains("sslrootcert="));
}

#[test]
fn the_root_certificate_of_the_home_directory_is_the_default_and_makes_require_check_the_chain() {
    let home = Dir::new();
    std::fs::create_dir_all(home.0.join(".postgresql")).unwrap();
    let (cert, _) = home.certificate("ca");
    std::fs::rename(&cert, home.0.join(".postgresql/root.crt")).unwrap();
    let full = tls("postgres://u@h/d?sslmode=verify-full", Some(&home.0)).expect("the default file is read");
    let root = home.0.join(".postgresql/root.crt");
    assert_eq!(&*full.settings, format!("sslmode=verify-full, sslrootcert={}", root.display()));
    // libpq's rule: `require` with a root certificate checks the chain; the settings say which file.
    let require = tls("postgres://u@h/d?sslmode=require", Some(&home.0)).expect("valid");
    assert_eq!(require.roots.as_deref(), Some(root.to_str().unwrap()));
    assert_eq!(require.driver_mode(), tokio_postgres::config::SslMode::Require);
}

#[test]
fn a_file_that_cannot_be_read_is_named_with_its_setting() {
    let dir = Dir::new();
    let missing = dir.0.join("absent.pem");
    let message = error(&format!("postgres://u@h/d?sslmode=verify-full&sslrootcert={}", missing.display()), None);
    assert!(message.contains("sslrootcert: cannot read") && message.contains("absent.pem"), "{message}");
    assert!(message.contains("no such file or directory"), "{message}");
    // Named but absent is an error even where libpq would go on unchecked.
    let message = error(&format!("postgres://u@h/d?sslmode=require&sslrootcert={}", missing.display()), None);
    assert!(message.contains("absent.pem"), "{message}");
    std::fs::write(&missing, "not a certificate").unwrap();
    let message = error(&format!("postgres://u@h/d?sslmode=verify-ca&sslrootcert={}", missing.display()), None);
    assert!(message.contains("holds no PEM certificate"), "{message}");

    let (cert, key) = dir.certificate("client");
    let absent_key = dir.0.join("absent.key");
    let message = error(&format!("postgres://u@h/d?sslcert={}&sslkey={}", cert.display(), absent_key.display()), None);
    assert!(message.contains("sslkey: cannot read") && message.contains("absent.key"), "{message}");
    let message = error(&format!("postgres://u@h/d?sslkey={}", key.display()), None);
    assert!(message.contains("sslkey is set but there is no client certificate"), "{message}");
    // A key that is not the certificate's.
    let (_, other_key) = dir.certificate("other");
    let message = error(&format!("postgres://u@h/d?sslcert={}&sslkey={}", cert.display(), other_key.display()), None);
    assert!(message.contains("do not go together"), "{message}");
    let good =
        tls(&format!("postgres://u@h/d?sslmode=require&sslcert={}&sslkey={}", cert.display(), key.display()), None);
    assert!(good.expect("a matching pair").settings.contains("sslcert="));
}

#[test]
fn disable_reads_no_file() {
    let tls = tls("postgres://u@h/d?sslmode=disable&sslrootcert=/absent.pem&sslcert=/absent.crt", None);
    assert_eq!(tls.expect("nothing read").driver_mode(), tokio_postgres::config::SslMode::Disable);
}

#[test]
fn system_roots_ask_for_verify_full_as_in_libpq_16() {
    let message = error("postgres://u@h/d?sslmode=require&sslrootcert=system", None);
    assert!(message.contains("sslmode=require may not be used with sslrootcert=system"), "{message}");
    let params = params::take("postgres://u@h/d?sslrootcert=system").unwrap().1;
    // Only the mode: whether this machine has CA certificates installed is not the test's business.
    if let Ok(tls) = Tls::new(&params, None) {
        assert_eq!(tls.mode, SslMode::VerifyFull);
    }
}

#[test]
fn handshake_failures_read_as_what_went_wrong() {
    let tls = tls("postgres://u@h/d?sslmode=require", None).unwrap();
    let unknown = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
    assert_eq!(tls.plain(&unknown), "the server's certificate is not signed by a CA in sslrootcert (unknown issuer)");
    let wrong_name = rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
        expected: ServerName::try_from("db.example").unwrap(),
        presented: vec!["DnsName(\"localhost\")".into(), "IpAddress(127.0.0.1)".into()],
    });
    assert!(
        tls.plain(&wrong_name).starts_with(
            "the server's certificate is not made out to host name db.example but to localhost, 127.0.0.1"
        ),
        "{}",
        tls.plain(&wrong_name)
    );
    let required = rustls::Error::AlertReceived(AlertDescription::CertificateRequired);
    assert!(tls.plain(&required).contains("set sslcert and sslkey"));
}
