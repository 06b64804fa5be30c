//! Dev-only helpers for Quern's integration tests, against the real services:
//!
//! - service URLs from `QUERN_TEST_AMQP_URL` and `QUERN_TEST_DATABASE_URL` (defaults match `scripts/services.sh`);
//! - [`TestQueues`]: a unique queue prefix per test, so tests run in parallel without seeing each other's jobs;
//! - [`TestDatabase`]: a fresh database per test, migrated, dropped at the end;
//! - [`init_tracing`]: quiet unless `TEST_LOG` is set;
//! - the fake embedder, re-exported, to start a real HTTP embedding server per test;
//! - [`tls`]: a RabbitMQ node with a TLS listener and a TLS-only PgBouncer, for `amqps://` and `verify-full`.

pub mod tls;

use std::time::Duration;

use quern_core::Topology;
use quern_queue::lapin::options::{ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions};
use quern_queue::lapin::types::FieldTable;
use quern_store::{Store, StoreConfig, VectorStorage};
use tokio_postgres::NoTls;

pub use quern_fake_embedder as fake_embedder;

/// Embedding dimension used by tests: small, so vectors are cheap, yet large enough for lexical search.
pub const TEST_DIM: usize = 64;

/// Retry tiers tests use to keep retries fast (`--retry-tiers 100ms,200ms`); [`TestQueues::delete`] removes
/// their queues.
pub const TEST_RETRY_TIERS: &[Duration] = &[Duration::from_millis(100), Duration::from_millis(200)];

/// RabbitMQ URL for tests.
pub fn amqp_url() -> String {
    std::env::var("QUERN_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// URL of a Postgres database with pgvector available, used to create one database per test.
pub fn admin_database_url() -> String {
    std::env::var("QUERN_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5433/postgres".to_owned())
}

/// A name no other test run uses: `<label>_<12 hex>`.
pub fn unique_name(label: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{label}_{}", &id[..12])
}

/// Logs to the test output when `TEST_LOG` is set (e.g. `TEST_LOG=debug`), otherwise nothing.
pub fn init_tracing() {
    if let Ok(filter) = std::env::var("TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// A database of its own for one test.
#[derive(Debug)]
pub struct TestDatabase {
    /// URL of the new database.
    pub url: String,
    name: String,
}

impl TestDatabase {
    /// Creates an empty database (no migrations).
    pub async fn create_empty() -> TestDatabase {
        let name = unique_name("quern_test");
        let (client, connection) = tokio_postgres::connect(&admin_database_url(), NoTls)
            .await
            .expect("connect to the test Postgres (run scripts/services.sh?)");
        tokio::spawn(connection);
        client.batch_execute(&format!("CREATE DATABASE \"{name}\"")).await.expect("create test database");
        let url = replace_database(&admin_database_url(), &name);
        TestDatabase { url, name }
    }

    /// Creates a database and applies Quern's migrations with dimension `dimension`.
    pub async fn create(dimension: usize) -> TestDatabase {
        TestDatabase::create_with_storage(dimension, VectorStorage::Vector).await
    }

    /// [`TestDatabase::create`] with the vectors stored as `storage`.
    pub async fn create_with_storage(dimension: usize, storage: VectorStorage) -> TestDatabase {
        let db = TestDatabase::create_empty().await;
        db.store().migrate_with_storage(dimension, storage).await.expect("migrate test database");
        db
    }

    /// The database's name (to reach it through another server, such as [`tls::TlsPostgres`]).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A store on this database.
    pub fn store(&self) -> Store {
        Store::connect(&StoreConfig::new(self.url.clone())).expect("store config")
    }

    /// A raw client for assertions.
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url, NoTls).await.expect("connect to test database");
        tokio::spawn(connection);
        client
    }

    /// Inserts `count` one-chunk documents `doc-1`..`doc-<count>` of collection `docs` with random vectors of
    /// `dimension`, straight into the tables (no worker): enough rows for index and search tests.
    pub async fn insert_random_chunks(&self, count: i32, dimension: usize) {
        self.insert_random_chunks_from(1, count, dimension).await;
    }

    /// [`TestDatabase::insert_random_chunks`] numbered from `first`: `doc-<first>`..`doc-<first + count - 1>`.
    pub async fn insert_random_chunks_from(&self, first: i32, count: i32, dimension: usize) {
        let client = self.client().await;
        let last = first + count - 1;
        client
            .execute(
                "INSERT INTO quern_documents (collection, document_id, content_sha256, chunk_count, embedding_model)
                 SELECT 'docs', 'doc-' || i, 'sha', 1, 'test-model' FROM generate_series($1::int4, $2::int4) AS i",
                &[&first, &last],
            )
            .await
            .expect("insert documents");
        // `WHERE i > 0` ties the subquery to the row, so each row gets its own vector.
        let chunks = format!(
            "INSERT INTO quern_chunks (collection, document_id, chunk_index, content, content_sha256, embedding)
             SELECT 'docs', 'doc-' || i, 0, 'chunk ' || i, 'sha',
                    (SELECT array_agg(random() - 0.5) FROM generate_series(1, {dimension}) WHERE i > 0)::vector
             FROM generate_series($1::int4, $2::int4) AS i"
        );
        client.execute(&chunks, &[&first, &last]).await.expect("insert chunks");
    }

    /// Chunk rows beyond one per (collection, document_id, chunk_index): 0 unless something wrote a chunk twice.
    pub async fn duplicate_chunk_rows(&self) -> i64 {
        self.client()
            .await
            .query_one(
                "SELECT count(*) - count(DISTINCT (collection, document_id, chunk_index)) FROM quern_chunks",
                &[],
            )
            .await
            .expect("count chunk rows")
            .get(0)
    }

    /// Drops the database (call at the end of a test; a failed test leaves it for inspection).
    pub async fn drop_database(self) {
        let (client, connection) = tokio_postgres::connect(&admin_database_url(), NoTls).await.expect("connect");
        tokio::spawn(connection);
        let _ = client.batch_execute(&format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name)).await;
    }
}

fn replace_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let path_start = base[scheme_end..].find('/').map(|i| i + scheme_end).unwrap_or(base.len());
    let mut out = format!("{}/{}", &base[..path_start], name);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// Queue names of one test.
#[derive(Debug, Clone)]
pub struct TestQueues {
    /// The test's topology (unique prefix).
    pub topology: Topology,
}

impl TestQueues {
    /// A unique prefix such as `qt_e2e_1a2b3c4d5e6f`.
    pub fn new(label: &str) -> TestQueues {
        TestQueues { topology: Topology::new(&unique_name(&format!("qt_{label}"))).expect("valid prefix") }
    }

    /// Messages ready in `queue` (unacknowledged ones are not counted).
    pub async fn ready_count(&self, queue: &str) -> u32 {
        let connection = quern_queue::connect(&amqp_url(), "quern-test").await.expect("connect");
        let channel = connection.create_channel().await.expect("channel");
        let declared = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() },
                FieldTable::default(),
            )
            .await
            .expect("queue exists");
        let _ = connection.close(200, "done".into()).await;
        declared.message_count()
    }

    /// Publishes `body` as is to the work exchange (as a client in any language could, malformed or not) and
    /// waits for the broker's confirm.
    pub async fn publish_raw(&self, channel: &lapin::Channel, body: &[u8]) {
        let properties = lapin::BasicProperties::default();
        quern_queue::publish(
            channel,
            &self.topology.work_exchange(),
            self.topology.ingest_routing_key(),
            body,
            properties,
        )
        .await
        .expect("publish")
        .wait(Duration::from_secs(60))
        .await
        .expect("confirmed by the broker");
    }

    /// A channel in confirm mode for [`TestQueues::publish_raw`] (keep the connection alive beside it).
    pub async fn raw_channel(&self) -> (lapin::Connection, lapin::Channel) {
        let connection = quern_queue::connect(&amqp_url(), "quern-test-raw").await.expect("connect");
        let channel = connection.create_channel().await.expect("channel");
        quern_queue::enable_confirms(&channel).await.expect("confirms");
        (connection, channel)
    }

    /// Deletes the test's queues (including the retry queues of the default tiers and of [`TEST_RETRY_TIERS`])
    /// and exchanges.
    pub async fn delete(&self) {
        let Ok(connection) = quern_queue::connect(&amqp_url(), "quern-test-cleanup").await else { return };
        let Ok(channel) = connection.create_channel().await else { return };
        let retry_queues = quern_core::retry::DEFAULT_TIERS
            .iter()
            .chain(TEST_RETRY_TIERS)
            .map(|tier| self.topology.retry_queue(*tier));
        for queue in [self.topology.ingest_queue(), self.topology.dead_queue()].into_iter().chain(retry_queues) {
            let _ = channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await;
        }
        for exchange in [self.topology.work_exchange(), self.topology.dead_exchange()] {
            let _ = channel.exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default()).await;
        }
        let _ = connection.close(200, "done".into()).await;
    }
}

/// `GET path` on 127.0.0.1:`port` over plain HTTP/1.1 (a worker's ops endpoint); the status code and body, or
/// `None` if nothing answers.
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((status, body))
}

/// A TCP port free right now on 127.0.0.1 (for a child process's listener).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// Polls `check` every 100 ms until it returns true or `timeout` passes; returns whether it did.
pub async fn wait_until<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_name_is_replaced_keeping_the_query() {
        assert_eq!(super::replace_database("postgres://u@h:1/postgres", "x"), "postgres://u@h:1/x");
        assert_eq!(
            super::replace_database("postgres://u@h:1/db?sslmode=disable", "x"),
            "postgres://u@h:1/x?sslmode=disable"
        );
        assert_eq!(super::replace_database("postgres://u@h:1", "x"), "postgres://u@h:1/x");
    }
}
