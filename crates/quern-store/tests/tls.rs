//! TLS to Postgres through the store, as libpq does it, against a TLS-only PgBouncer that each test starts in
//! front of the test server, with a throwaway CA made by the test: `verify-full` with the right CA and host name
//! migrates, writes and searches; another CA, or a host name the certificate does not name, fails saying so
//! (`verify-ca` accepting the latter); `require` fails against the plain test server; a client certificate is
//! sent when the server asks for one.
//!
//! The PgBouncer is the testkit's [`TlsPostgres`]; it is required, not optional: `apt-get install pgbouncer`
//! (`scripts/test.sh` installs it).

use std::path::PathBuf;

use chrono::Utc;
use pgvector::Vector;
use quern_core::Job;
use quern_store::{ChunkRow, DocumentChange, DocumentCommit, DocumentState, JobVersion, Store, StoreConfig};
use quern_testkit::tls::{upstream, TempDir, TlsPostgres};
use quern_testkit::{TestDatabase, TEST_DIM};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// A throwaway certificate authority, its certificate in `<name>.pem`.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    file: PathBuf,
}

impl Ca {
    fn new(dir: &TempDir, name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, format!("Quern test CA {name}"));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA");
        let file = dir.write(&format!("{name}.pem"), &issuer.pem());
        Ca { issuer, file }
    }

    /// A certificate for `names` (DNS names or IP addresses) and its key, signed by this CA, as `<name>.crt` and
    /// `<name>.key`; `common_name` is the user name for a client certificate.
    fn issue(&self, dir: &TempDir, name: &str, names: &[&str], common_name: &str, client: bool) -> (PathBuf, PathBuf) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("certificate parameters");
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.extended_key_usages =
            vec![if client { ExtendedKeyUsagePurpose::ClientAuth } else { ExtendedKeyUsagePurpose::ServerAuth }];
        let key = KeyPair::generate().expect("key");
        let certificate = params.signed_by(&key, &self.issuer).expect("signed certificate");
        (dir.write(&format!("{name}.crt"), &certificate.pem()), dir.write(&format!("{name}.key"), &key.serialize_pem()))
    }
}

/// The error of connecting with `url` (the connection must fail).
async fn connect_error(url: &str) -> String {
    let store = Store::connect(&StoreConfig::new(url)).expect("valid settings");
    store.ping().await.expect_err("the connection must fail").to_string()
}

async fn ping(url: &str) {
    let store = Store::connect(&StoreConfig::new(url)).expect("valid settings");
    if let Err(error) = store.ping().await {
        panic!("connecting with {url} failed: {error}");
    }
}

/// A server certificate made out to `localhost` only, by a fresh CA, with PgBouncer serving it.
async fn tls_only_server(dir: &TempDir) -> (Ca, TlsPostgres) {
    let ca = Ca::new(dir, "ca");
    let (cert, key) = ca.issue(dir, "server", &["localhost"], "localhost", false);
    let bouncer = TlsPostgres::start(dir, &cert, &key, None).await;
    (ca, bouncer)
}

fn one_document(text: &str, embedding: Vector) -> DocumentCommit {
    let job = Job::upsert("docs", "doc-1", text);
    let change = DocumentChange::Replace {
        document: DocumentState {
            content_sha256: quern_core::digest::content_sha256(text),
            embedding_model: "test-model".into(),
            chunking: "chars:1000:200".into(),
            metadata: None,
        },
        chunks: vec![ChunkRow {
            content_sha256: quern_core::digest::content_sha256(text),
            content: text.to_owned(),
            embedding,
        }],
    };
    DocumentCommit::new(&job, JobVersion { at: Utc::now(), job_id: job.job_id }, change)
}

#[tokio::test]
async fn verify_full_with_the_right_ca_and_host_name_migrates_writes_and_searches() {
    let dir = TempDir::new();
    let (ca, bouncer) = tls_only_server(&dir).await;
    let db = TestDatabase::create_empty().await;
    let database = db.name();
    let url = bouncer.url("localhost", database, &format!("sslmode=verify-full&sslrootcert={}", ca.file.display()));

    let store = Store::connect(&StoreConfig::new(url)).expect("valid settings");
    store.migrate(TEST_DIM).await.expect("migrations over TLS");
    let mut values = vec![0.0_f32; TEST_DIM];
    values[3] = 1.0;
    store.commit_documents(&[one_document("over TLS", Vector::from(values.clone()))]).await.expect("write over TLS");
    let hits = store.search("docs", Vector::from(values), 1).await.expect("search over TLS");
    assert_eq!(hits.first().map(|hit| hit.content.as_str()), Some("over TLS"));

    // libpq's key=value form takes the same parameters.
    let upstream = upstream();
    ping(&format!(
        "host=localhost port={} user={} dbname={database} sslmode=verify-full sslrootcert='{}'",
        bouncer.port,
        upstream.user,
        ca.file.display()
    ))
    .await;
    drop(store);
    drop(bouncer);
    db.drop_database().await;
}

#[tokio::test]
async fn a_server_certificate_from_another_ca_is_refused_saying_so() {
    let dir = TempDir::new();
    let (_, bouncer) = tls_only_server(&dir).await;
    let other = Ca::new(&dir, "other-ca");
    for mode in ["verify-full", "verify-ca", "require"] {
        let url = bouncer.url("localhost", "postgres", &format!("sslmode={mode}&sslrootcert={}", other.file.display()));
        let error = connect_error(&url).await;
        let expected = format!(
            "TLS handshake failed (sslmode={mode}, sslrootcert={0}): the server's certificate is not signed by a CA \
             in {0} (unknown issuer)",
            other.file.display()
        );
        assert!(error.contains(&expected), "{error}");
        assert!(error.starts_with(&format!("cannot connect to PostgreSQL at localhost:{}", bouncer.port)), "{error}");
    }
    // `require` without a root certificate encrypts without checking, as libpq does.
    ping(&bouncer.url("localhost", "postgres", "sslmode=require")).await;
    ping(&bouncer.url("localhost", "postgres", "sslmode=prefer")).await;
}

#[tokio::test]
async fn a_host_name_not_in_the_certificate_fails_verify_full_but_passes_verify_ca() {
    let dir = TempDir::new();
    let (ca, bouncer) = tls_only_server(&dir).await;
    let root = format!("sslrootcert={}", ca.file.display());
    // A DNS name the certificate does not name, reached at 127.0.0.1 (`hostaddr`), and the address itself.
    for (host, extra) in [("db.example", "&hostaddr=127.0.0.1"), ("127.0.0.1", "")] {
        let error = connect_error(&bouncer.url(host, "postgres", &format!("sslmode=verify-full&{root}{extra}"))).await;
        let expected = format!(
            "TLS handshake failed (sslmode=verify-full, {root}): the server's certificate is not made out to host \
             name {host} but to localhost"
        );
        assert!(error.contains(&expected), "{error}");
        ping(&bouncer.url(host, "postgres", &format!("sslmode=verify-ca&{root}{extra}"))).await;
    }
}

#[tokio::test]
async fn require_fails_against_a_server_without_tls_and_prefer_goes_without() {
    let plain = upstream();
    let url = format!("postgres://{}@{}:{}/postgres", plain.user, plain.host, plain.port);
    let error = connect_error(&format!("{url}?sslmode=require")).await;
    assert!(error.ends_with(": the server does not offer TLS, which sslmode=require requires"), "{error}");
    ping(&format!("{url}?sslmode=prefer")).await;
    ping(&format!("{url}?sslmode=disable")).await;
}

#[tokio::test]
async fn a_client_certificate_is_sent_when_the_server_asks_for_one() {
    let dir = TempDir::new();
    let ca = Ca::new(&dir, "ca");
    let (cert, key) = ca.issue(&dir, "server", &["localhost"], "localhost", false);
    let bouncer = TlsPostgres::start(&dir, &cert, &key, Some(&ca.file)).await;
    let user = upstream().user;
    let (client_cert, client_key) = ca.issue(&dir, "client", &[], &user, true);
    let root = format!("sslmode=verify-full&sslrootcert={}", ca.file.display());

    let with_cert = format!("{root}&sslcert={}&sslkey={}", client_cert.display(), client_key.display());
    ping(&bouncer.url("localhost", "postgres", &with_cert)).await;

    let error = connect_error(&bouncer.url("localhost", "postgres", &root)).await;
    assert!(error.contains("the server asks for a client certificate: set sslcert and sslkey"), "{error}");

    let stranger = Ca::new(&dir, "stranger");
    let (other_cert, other_key) = stranger.issue(&dir, "stranger", &[], &user, true);
    let with_other = format!("{root}&sslcert={}&sslkey={}", other_cert.display(), other_key.display());
    let error = connect_error(&bouncer.url("localhost", "postgres", &with_other)).await;
    assert!(error.contains("the server refused the client certificate"), "{error}");
}
