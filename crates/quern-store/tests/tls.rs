//! TLS to Postgres through the store, as libpq does it, against a TLS-only PgBouncer that each test starts in
//! front of the test server, with a throwaway CA made by the test: `verify-full` with the right CA and host name
//! migrates, writes and searches; another CA, or a host name the certificate does not name, fails saying so
//! (`verify-ca` accepting the latter); `require` fails against the plain test server; a client certificate is
//! sent when the server asks for one.
//!
//! PgBouncer is required, not optional: `apt-get install pgbouncer` (`scripts/test.sh` installs it).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::Duration;

use chrono::Utc;
use pgvector::Vector;
use quern_core::Job;
use quern_store::{ChunkRow, DocumentChange, DocumentCommit, DocumentState, JobVersion, Store, StoreConfig};
use quern_testkit::{admin_database_url, free_port, unique_name, wait_until, TestDatabase, TEST_DIM};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use tokio_postgres::config::Host;

/// A directory of the test's own, removed at the end unless the test failed.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let dir = std::env::temp_dir().join(unique_name("quern_tls"));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        TempDir(dir)
    }

    fn write(&self, name: &str, content: &str) -> PathBuf {
        let file = self.0.join(name);
        std::fs::write(&file, content).expect("write a test file");
        file
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

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

/// The plain test server: host, port, user and password from `QUERN_TEST_DATABASE_URL`.
struct Upstream {
    host: String,
    port: u16,
    user: String,
    password: Option<String>,
}

fn upstream() -> Upstream {
    let config = tokio_postgres::Config::from_str(&admin_database_url()).expect("a valid test database URL");
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(host)) => host.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    Upstream {
        host,
        port: config.get_ports().first().copied().unwrap_or(5432),
        user: config.get_user().unwrap_or("postgres").to_owned(),
        password: config.get_password().map(|p| String::from_utf8_lossy(p).into_owned()),
    }
}

/// PgBouncer on 127.0.0.1:`port` in front of the test server, accepting TLS only; killed when dropped.
struct Bouncer {
    child: Child,
    port: u16,
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pgbouncer_binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("pgbouncer"))
        .find(|file| file.is_file())
        .unwrap_or_else(|| {
            panic!(
                "pgbouncer is not installed: the Postgres TLS tests put it, TLS-only, in front of the test server. \
                 Install it (apt-get install pgbouncer), or run scripts/test.sh, which does"
            )
        })
}

impl Bouncer {
    /// Starts PgBouncer with the server certificate `cert` and `key`; with `client_ca`, it also asks every
    /// client for a certificate signed by that CA.
    async fn start(dir: &TempDir, cert: &Path, key: &Path, client_ca: Option<&Path>) -> Bouncer {
        let upstream = upstream();
        let port = free_port();
        let password = upstream.password.as_deref().unwrap_or("").replace('"', "\"\"");
        let users = dir.write("users.txt", &format!("\"{}\" \"{password}\"\n", upstream.user));
        let client_tls = match client_ca {
            Some(ca) => format!("client_tls_sslmode = verify-full\nclient_tls_ca_file = {}\n", ca.display()),
            None => "client_tls_sslmode = require\n".to_owned(),
        };
        // `options` carries Quern's statement timeout, which PgBouncer 1.18 cannot pass on.
        let ini = dir.write(
            "pgbouncer.ini",
            &format!(
                "[databases]\n* = host={} port={}\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n\
                 unix_socket_dir =\nauth_type = trust\nauth_file = {}\npool_mode = session\n\
                 ignore_startup_parameters = options,extra_float_digits\n{client_tls}\
                 client_tls_cert_file = {}\nclient_tls_key_file = {}\n",
                upstream.host,
                upstream.port,
                users.display(),
                cert.display(),
                key.display()
            ),
        );
        let log = std::fs::File::create(dir.0.join("pgbouncer.log")).expect("log file");
        let mut command = Command::new(pgbouncer_binary());
        // PgBouncer refuses to run as root: it is told to switch to `nobody`, who can read the test's files.
        if running_as_root() {
            command.args(["-u", "nobody"]);
        }
        let child = command
            .arg(&ini)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start pgbouncer");
        let mut bouncer = Bouncer { child, port };
        let listening = wait_until(Duration::from_secs(10), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
        })
        .await;
        if !listening || bouncer.child.try_wait().ok().flatten().is_some() {
            let log = std::fs::read_to_string(dir.0.join("pgbouncer.log")).unwrap_or_default();
            panic!("pgbouncer did not start listening on port {port}; its log:\n{log}");
        }
        bouncer
    }

    /// A URL of database `database` through PgBouncer, by host name `host`, with the query `tls`.
    fn url(&self, host: &str, database: &str, tls: &str) -> String {
        format!("postgres://{}@{host}:{}/{database}?{tls}", upstream().user, self.port)
    }
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

fn database_name(db: &TestDatabase) -> String {
    let config = tokio_postgres::Config::from_str(&db.url).expect("test database URL");
    config.get_dbname().expect("a database name").to_owned()
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
async fn tls_only_server(dir: &TempDir) -> (Ca, Bouncer) {
    let ca = Ca::new(dir, "ca");
    let (cert, key) = ca.issue(dir, "server", &["localhost"], "localhost", false);
    let bouncer = Bouncer::start(dir, &cert, &key, None).await;
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
    let database = database_name(&db);
    let url = bouncer.url("localhost", &database, &format!("sslmode=verify-full&sslrootcert={}", ca.file.display()));

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
    let bouncer = Bouncer::start(&dir, &cert, &key, Some(&ca.file)).await;
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
