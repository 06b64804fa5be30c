//! TLS servers for the tests that speak `amqps://` and `sslmode=verify-*`:
//!
//! - [`TlsBroker`]: one throwaway RabbitMQ node per test process with a TLS listener and the certificates to talk
//!   to it (`scripts/rabbitmq-tls.sh`); the script's watchdog stops it once the process exits, however it exits;
//! - [`TlsPostgres`]: a TLS-only PgBouncer in front of the test Postgres, with the certificate a test gives it;
//!   killed when dropped;
//! - [`TempDir`]: a directory of the test's own for certificates, configuration and logs.
//!
//! PgBouncer is required, not optional: `apt-get install pgbouncer` (`scripts/test.sh` installs it).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::Duration;

use tokio_postgres::config::Host;

use crate::{admin_database_url, free_port, unique_name, wait_until};

/// A directory of the test's own, removed at the end unless the test failed.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new empty directory under the system's temporary directory.
    pub fn new() -> TempDir {
        let dir = std::env::temp_dir().join(unique_name("quern_tls"));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        TempDir(dir)
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `content` to the file `name` in it; the file's path.
    pub fn write(&self, name: &str, content: &str) -> PathBuf {
        let file = self.0.join(name);
        std::fs::write(&file, content).expect("write a test file");
        file
    }
}

impl Default for TempDir {
    fn default() -> TempDir {
        TempDir::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The RabbitMQ node with a TLS listener that this test process started (see `scripts/rabbitmq-tls.sh` for the
/// certificate files: `ca.pem`, `server.pem` and `server.key` for localhost and 127.0.0.1, `client.pem`, ...).
#[derive(Debug)]
pub struct TlsBroker {
    /// Its TLS port on 127.0.0.1.
    pub port: u16,
    /// Where the certificates are.
    tls: PathBuf,
}

impl TlsBroker {
    /// The node of this process, started on first use (a few seconds); panics saying why if it cannot start.
    pub fn get() -> &'static TlsBroker {
        static BROKER: OnceLock<Result<TlsBroker, String>> = OnceLock::new();
        match BROKER.get_or_init(TlsBroker::start) {
            Ok(broker) => broker,
            Err(error) => panic!("{error}"),
        }
    }

    fn start() -> Result<TlsBroker, String> {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/rabbitmq-tls.sh");
        let id = uuid::Uuid::new_v4().simple().to_string();
        let dir = std::env::temp_dir().join(format!("quern-tls-{}", &id[..12]));
        let output = Command::new("bash")
            .arg(script)
            .arg("start")
            .arg(&dir)
            .arg(std::process::id().to_string())
            .output()
            .map_err(|error| format!("cannot run {script}: {error}"))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            return Err(format!("{script} start failed:\n{}", String::from_utf8_lossy(&output.stderr)));
        }
        let value = |key: &str| {
            stdout
                .lines()
                .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
                .ok_or_else(|| format!("{script} printed no {key}: {stdout}"))
        };
        let port = value("QUERN_TLS_PORT")?.parse().map_err(|_| "QUERN_TLS_PORT is not a port".to_owned())?;
        Ok(TlsBroker { port, tls: PathBuf::from(value("QUERN_TLS_DIR")?) })
    }

    /// The path of the certificate file `name`, e.g. `ca.pem`.
    pub fn file(&self, name: &str) -> String {
        self.tls.join(name).display().to_string()
    }

    /// `amqps://guest:guest@HOST:PORT/%2f?QUERY`.
    pub fn url(&self, host: &str, query: &str) -> String {
        format!("amqps://guest:guest@{host}:{}/%2f?{query}", self.port)
    }

    /// [`TlsBroker::url`] trusting the CA in the certificate file `ca`.
    pub fn url_with_ca(&self, host: &str, ca: &str) -> String {
        self.url(host, &format!("cacertfile={}", self.file(ca)))
    }
}

/// The plain test server: host, port, user and password from `QUERN_TEST_DATABASE_URL`.
#[derive(Debug)]
pub struct Upstream {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
}

/// The plain test server that [`TlsPostgres`] stands in front of.
pub fn upstream() -> Upstream {
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

/// PgBouncer on 127.0.0.1:`port` in front of the test server, accepting TLS only; killed when dropped. Every
/// database of the test server is reachable through it by name.
#[derive(Debug)]
pub struct TlsPostgres {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The installed `pgbouncer`; panics saying how to install it if there is none.
pub fn pgbouncer_binary() -> PathBuf {
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

impl TlsPostgres {
    /// Starts PgBouncer with the server certificate `cert` and `key`, its configuration and log in `dir`; with
    /// `client_ca`, it also asks every client for a certificate signed by that CA.
    pub async fn start(dir: &TempDir, cert: &Path, key: &Path, client_ca: Option<&Path>) -> TlsPostgres {
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
        let log_file = dir.path().join("pgbouncer.log");
        let log = std::fs::File::create(&log_file).expect("log file");
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
        let mut bouncer = TlsPostgres { child, port };
        let listening = wait_until(Duration::from_secs(10), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
        })
        .await;
        if !listening || bouncer.child.try_wait().ok().flatten().is_some() {
            let log = std::fs::read_to_string(&log_file).unwrap_or_default();
            panic!("pgbouncer did not start listening on port {port}; its log:\n{log}");
        }
        bouncer
    }

    /// A URL of database `database` through PgBouncer, by host name `host`, with the query `tls`.
    pub fn url(&self, host: &str, database: &str, tls: &str) -> String {
        format!("postgres://{}@{host}:{}/{database}?{tls}", upstream().user, self.port)
    }
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}
