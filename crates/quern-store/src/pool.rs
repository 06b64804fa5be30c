//! The connection pool: every deadpool timeout set, a server-side statement timeout, a client-side limit per call.

use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use std::sync::Arc;

use deadpool_postgres::{
    Hook, HookError, Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime, TimeoutType,
};
use quern_core::metric_names;
use secrecy::{ExposeSecret, SecretString};
use tokio_postgres::config::Host;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::describe;
use crate::tls::Tls;
use crate::StoreError;

/// How to reach Postgres and how long to wait for it.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `postgres://user:password@host:port/db`, or libpq's `key=value` form; a secret because it usually holds a
    /// password. libpq's TLS parameters are honoured (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`: see
    /// `tls.rs`); `prefer` by default, as in libpq.
    pub url: SecretString,
    /// Largest number of pooled connections.
    pub max_connections: usize,
    /// Longest wait for a free pooled connection.
    pub wait_timeout: Duration,
    /// Longest wait to open a new connection.
    pub create_timeout: Duration,
    /// Longest wait to check a returned connection.
    pub recycle_timeout: Duration,
    /// Server-side `statement_timeout` of every connection.
    pub statement_timeout: Duration,
    /// Client-side limit on one whole operation (tokio-postgres has none of its own).
    pub operation_timeout: Duration,
    /// The Postgres schema of Quern's tables (a shadow run's, say): first on every connection's `search_path`,
    /// created by the migrations. `None` keeps the database's default (`public`).
    pub schema: Option<String>,
}

impl StoreConfig {
    /// Safe defaults for `url`: 16 connections, 10 s waits, 60 s statements.
    pub fn new(url: impl Into<String>) -> StoreConfig {
        StoreConfig {
            url: SecretString::from(url.into()),
            max_connections: 16,
            wait_timeout: Duration::from_secs(10),
            create_timeout: Duration::from_secs(10),
            recycle_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(60),
            operation_timeout: Duration::from_secs(90),
            schema: None,
        }
    }
}

/// Quern's handle on Postgres. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    operation_timeout: Duration,
    create_timeout: Duration,
    /// Where the connections go, for messages: `host:port (database d, user u)`, never the password.
    target: Arc<str>,
    /// The schema of Quern's tables, when not the default.
    schema: Option<Arc<str>>,
    /// The TLS settings every connection (and cancel request) uses.
    tls: Tls,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("target", &self.target)
            .field("status", &self.pool.status())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Builds the pool; connections open lazily, so call [`Store::ping`] to check the database answers.
    pub fn connect(config: &StoreConfig) -> Result<Store, StoreError> {
        // tokio-postgres knows neither libpq's verify modes nor its certificate files: they are taken out first.
        let (url, tls) = Tls::from_connection_string(config.url.expose_secret())?;
        // The driver's parse errors can echo the URL, password included: report a fixed message instead.
        let mut pg = tokio_postgres::Config::from_str(&url)
            .map_err(|_| StoreError::Config("the database URL is not a valid postgres:// URL".into()))?;
        pg.ssl_mode(tls.driver_mode());
        let schema: Option<Arc<str>> = config.schema.as_deref().map(check_schema).transpose()?.map(Arc::from);
        let target = match &schema {
            Some(schema) => format!("{} schema {schema}", describe_target(&pg)).into(),
            None => describe_target(&pg).into(),
        };
        pg.application_name("quern");
        pg.options(format!("-c statement_timeout={}", config.statement_timeout.as_millis()));
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(config.create_timeout);
        }
        // `Fast` only checks `is_closed()`; a connection killed by a restart fails its first query, which is
        // classified transient and retried, instead of paying a round trip on every checkout.
        let manager =
            Manager::from_config(pg, tls.connector(), ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool =
            Pool::builder(manager)
                .max_size(config.max_connections)
                .wait_timeout(Some(config.wait_timeout))
                .create_timeout(Some(config.create_timeout))
                .recycle_timeout(Some(config.recycle_timeout))
                .runtime(Runtime::Tokio1)
                .post_create(Hook::sync_fn(|_, _| {
                    metrics::counter!(metric_names::DB_CONNECTIONS_OPENED).increment(1);
                    Ok(())
                }))
                .post_create(Hook::async_fn({
                    let schema = schema.clone();
                    move |client, _| {
                        let search_path = schema.as_deref().map(|schema| {
                    // Put first, the rest of the path kept: pgvector may live in `public` or, on managed
                    // services, in a schema of its own (`extensions`) that the path names.
                    format!("SELECT set_config('search_path', '{schema}, ' || current_setting('search_path'), false)")
                });
                        Box::pin(async move {
                            if let Some(statement) = search_path {
                                client.simple_query(&statement).await.map_err(HookError::Backend)?;
                            }
                            Ok(())
                        })
                    }
                }))
                .build()
                .map_err(|e| StoreError::Internal(format!("building the connection pool: {e}")))?;
        Ok(Store {
            pool,
            operation_timeout: config.operation_timeout,
            create_timeout: config.create_timeout,
            target,
            schema,
            tls,
        })
    }

    /// The schema of Quern's tables when it is not the database's default.
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// Where the store connects, for messages: `127.0.0.1:5433 (database postgres, user postgres)`.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Checks the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.timed("ping", async {
            let client = self.client().await?;
            client.simple_query("SELECT 1").await.map_err(StoreError::db("ping"))?;
            Ok(())
        })
        .await
    }

    /// The TLS connector of every connection: a cancel request must use it too.
    pub(crate) fn tls_connector(&self) -> MakeRustlsConnect {
        self.tls.connector()
    }

    pub(crate) async fn client(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(|error| {
            let connect = |reason| StoreError::Connect { target: self.target.to_string(), reason };
            match &error {
                // Opening a new connection failed: say where, and why in plain words.
                PoolError::Backend(cause) => connect(self.tls.explain(cause).unwrap_or_else(|| describe(cause))),
                PoolError::Timeout(TimeoutType::Create) => {
                    connect(format!("no answer within {}", seconds(self.create_timeout)))
                }
                _ => StoreError::Pool(with_causes(&error)),
            }
        })
    }

    /// Runs `operation` under the client-side time limit.
    pub(crate) async fn timed<T>(
        &self,
        operation: &'static str,
        work: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(self.operation_timeout, work)
            .await
            .map_err(|_| StoreError::Timeout { operation, timeout: self.operation_timeout })?
    }
}

/// `host:port (database d, user u)` from the parsed URL, with libpq's defaults for what it leaves out.
fn describe_target(config: &tokio_postgres::Config) -> String {
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            // One port for all hosts, or one per host; 5432 when none is given.
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match host {
                Host::Tcp(name) if name.contains(':') => format!("[{name}]:{port}"),
                Host::Tcp(name) => format!("{name}:{port}"),
                Host::Unix(path) => format!("{}/.s.PGSQL.{port}", path.display()),
            }
        })
        .collect();
    let hosts = if hosts.is_empty() { "localhost:5432".to_owned() } else { hosts.join(",") };
    let user = config.get_user().unwrap_or("(none)");
    let database = config.get_dbname().unwrap_or(user);
    format!("{hosts} (database {database}, user {user})")
}

/// `10s`, `1.5s`, `500ms`.
fn seconds(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis())
    }
}

/// An error with its chain of causes ("error connecting to server: Connection refused"): deadpool's and
/// tokio-postgres's top-level messages leave out the part an operator needs.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// A schema name usable unquoted in `search_path` and DDL: lower-case ASCII letters, digits and `_`, not starting
/// with a digit, at most 63 bytes (Postgres' identifier limit).
fn check_schema(schema: &str) -> Result<&str, StoreError> {
    let valid = !schema.is_empty()
        && schema.len() <= 63
        && !schema.as_bytes()[0].is_ascii_digit()
        && schema.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if valid {
        Ok(schema)
    } else {
        Err(StoreError::Config(format!(
            "database schema `{schema}` must be 1-63 lower-case letters, digits or `_`, not starting with a digit"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str) -> String {
        describe_target(&tokio_postgres::Config::from_str(url).expect("valid URL"))
    }

    #[test]
    fn the_target_names_host_port_database_and_user_but_no_password() {
        assert_eq!(
            target("postgres://postgres@127.0.0.1:5433/postgres"),
            "127.0.0.1:5433 (database postgres, user postgres)"
        );
        assert_eq!(target("postgres://quern:s3cret@db/ingest"), "db:5432 (database ingest, user quern)");
        assert_eq!(target("postgres://quern@db"), "db:5432 (database quern, user quern)");
        assert_eq!(target("postgres://u@a:1,b:2/d"), "a:1,b:2 (database d, user u)");
    }

    /// A database that is not there: one line naming host, port, database and user, and the cause once.
    #[tokio::test]
    async fn a_refused_connection_reads_as_one_line() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
        let store = Store::connect(&StoreConfig::new(format!("postgres://quern:s3cret@127.0.0.1:{port}/ingest")))
            .expect("valid settings");
        let error = store.ping().await.expect_err("nothing listens there");
        assert_eq!(
            error.to_string(),
            format!(
                "cannot connect to PostgreSQL at 127.0.0.1:{port} (database ingest, user quern): connection refused"
            )
        );
        assert!(std::error::Error::source(&error).is_none(), "the cause is told once, in the message");
        assert_eq!(error.class(), quern_core::ErrorClass::Transient);
    }

    #[test]
    fn an_unparsable_url_is_refused_without_echoing_it() {
        let error = Store::connect(&StoreConfig::new("postgres://u:s3cret@h:notaport/d")).expect_err("invalid");
        assert!(!error.to_string().contains("s3cret"), "{error}");
        assert_eq!(error.class(), quern_core::ErrorClass::Permanent);
    }
}
