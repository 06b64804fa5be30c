//! The connection pool: every deadpool timeout set, a server-side statement timeout, a client-side limit per call.

use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Hook, Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use quern_core::metric_names;
use secrecy::{ExposeSecret, SecretString};
use tokio_postgres::NoTls;

use crate::StoreError;

/// How to reach Postgres and how long to wait for it.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `postgres://user:password@host:port/db`; a secret because it usually holds a password.
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
        }
    }
}

/// Quern's handle on Postgres. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    operation_timeout: Duration,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("status", &self.pool.status()).finish_non_exhaustive()
    }
}

impl Store {
    /// Builds the pool; connections open lazily, so call [`Store::ping`] to check the database answers.
    pub fn connect(config: &StoreConfig) -> Result<Store, StoreError> {
        // The driver's parse errors can echo the URL, password included: report a fixed message instead.
        let mut pg = tokio_postgres::Config::from_str(config.url.expose_secret())
            .map_err(|_| StoreError::Config("the database URL is not a valid postgres:// URL".into()))?;
        pg.application_name("quern");
        pg.options(format!("-c statement_timeout={}", config.statement_timeout.as_millis()));
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(config.create_timeout);
        }
        // `Fast` only checks `is_closed()`; a connection killed by a restart fails its first query, which is
        // classified transient and retried, instead of paying a round trip on every checkout.
        let manager = Manager::from_config(pg, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(config.max_connections)
            .wait_timeout(Some(config.wait_timeout))
            .create_timeout(Some(config.create_timeout))
            .recycle_timeout(Some(config.recycle_timeout))
            .runtime(Runtime::Tokio1)
            .post_create(Hook::sync_fn(|_, _| {
                metrics::counter!(metric_names::DB_CONNECTIONS_OPENED).increment(1);
                Ok(())
            }))
            .build()
            .map_err(|e| StoreError::Config(e.to_string()))?;
        Ok(Store { pool, operation_timeout: config.operation_timeout })
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

    pub(crate) async fn client(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(|e| StoreError::Pool(with_causes(&e)))
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
