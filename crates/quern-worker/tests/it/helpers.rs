//! Shared set-up: a database, queues and a fake embedder per test, and a worker configuration pointing at them.

use quern_core::{Chunker, Job};
use quern_producer::{Producer, ProducerConfig};
use quern_testkit::fake_embedder::{self, FakeEmbedderConfig, RunningFakeEmbedder};
use quern_testkit::{TestDatabase, TestQueues, TEST_DIM};
use quern_worker::consumer::build_pipeline;
use quern_worker::{Pipeline, WorkerConfig};
use tokio_util::sync::CancellationToken;

pub struct Harness {
    pub db: TestDatabase,
    pub queues: TestQueues,
    pub embedder: RunningFakeEmbedder,
}

impl Harness {
    pub async fn start(label: &str, embedder: FakeEmbedderConfig) -> Harness {
        quern_testkit::init_tracing();
        let db = TestDatabase::create(TEST_DIM).await;
        let queues = TestQueues::new(label);
        let embedder =
            fake_embedder::spawn(FakeEmbedderConfig { dim: TEST_DIM, ..embedder }).await.expect("fake embedder");
        Harness { db, queues, embedder }
    }

    /// The worker's arguments for this harness, plus `extra` flags.
    pub fn worker_args(&self, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "quern-worker".into(),
            "--amqp-url".into(),
            quern_testkit::amqp_url(),
            "--queue-prefix".into(),
            self.queues.topology.prefix().into(),
            "--database-url".into(),
            self.db.url.clone(),
            "--embedding-url".into(),
            self.embedder.url(),
            "--embedding-dim".into(),
            TEST_DIM.to_string(),
            "--chunk-size".into(),
            "200".into(),
            "--chunk-overlap".into(),
            "40".into(),
            "--batch-size".into(),
            "8".into(),
            // Tests run in parallel in one process: each worker's ops endpoint on a port of its own.
            "--metrics-addr".into(),
            "127.0.0.1:0".into(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    }

    /// The worker's arguments with every setting at its default but what the harness must set: the services'
    /// URLs, the queue prefix, the vector dimension, and an ops endpoint on a port of its own; plus `extra`.
    pub fn default_worker_args(&self, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "quern-worker".into(),
            "--amqp-url".into(),
            quern_testkit::amqp_url(),
            "--queue-prefix".into(),
            self.queues.topology.prefix().into(),
            "--database-url".into(),
            self.db.url.clone(),
            "--embedding-url".into(),
            self.embedder.url(),
            "--embedding-dim".into(),
            TEST_DIM.to_string(),
            "--metrics-addr".into(),
            "127.0.0.1:0".into(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    }

    /// Starts an in-process worker with [`Harness::default_worker_args`].
    pub fn spawn_default_worker(
        &self,
        extra: &[&str],
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<anyhow::Result<()>> {
        let args = self.default_worker_args(extra).into_iter().map(std::ffi::OsString::from).collect();
        let config = quern_worker::config_file::load(args).expect("valid worker flags").config;
        tokio::spawn(quern_worker::run(config, shutdown))
    }

    pub fn worker_config(&self, extra: &[&str]) -> WorkerConfig {
        // The binary's own loader: later flags override earlier ones, as on a command line.
        let args = self.worker_args(extra).into_iter().map(std::ffi::OsString::from).collect();
        quern_worker::config_file::load(args).expect("valid worker flags").config
    }

    pub async fn pipeline(&self, extra: &[&str]) -> Pipeline {
        build_pipeline(&self.worker_config(extra)).await.expect("pipeline")
    }

    pub async fn producer(&self) -> Producer {
        Producer::connect(ProducerConfig::new(quern_testkit::amqp_url()).with_topology(self.queues.topology.clone()))
            .await
            .expect("producer")
    }

    /// Starts an in-process worker; cancel the token to stop it, then await the handle.
    pub fn spawn_worker(
        &self,
        extra: &[&str],
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<anyhow::Result<()>> {
        let config = self.worker_config(extra);
        tokio::spawn(quern_worker::run(config, shutdown))
    }

    pub async fn cleanup(self) {
        self.queues.delete().await;
        self.db.drop_database().await;
    }
}

/// The chunker the harness's workers use.
pub fn test_chunker() -> Chunker {
    Chunker::new(200, 40).expect("valid")
}

/// A deterministic document of about `words` words drawn from a small vocabulary.
pub fn document_text(seed: u64, words: usize) -> String {
    const VOCABULARY: &[&str] = &[
        "river", "stone", "mill", "grain", "harvest", "lantern", "harbour", "signal", "copper", "valley", "orchard",
        "winter", "ledger", "compass", "meadow", "thunder", "archive", "furnace", "willow", "beacon",
    ];
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut text = String::with_capacity(words * 8);
    for i in 0..words {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        text.push_str(VOCABULARY[(state >> 33) as usize % VOCABULARY.len()]);
        text.push(if i % 12 == 11 { '.' } else { ' ' });
        if i % 12 == 11 {
            text.push(' ');
        }
    }
    text
}

/// A deterministic document of `bytes` bytes (ASCII words and sentences).
pub fn document_of_bytes(seed: u64, bytes: usize) -> String {
    let mut text = document_text(seed, bytes / 4);
    text.truncate(bytes);
    text
}

pub fn upsert(collection: &str, document_id: &str, text: &str) -> Job {
    Job::upsert(collection, document_id, text)
}
