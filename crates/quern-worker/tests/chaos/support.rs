//! Set-up shared by the scenarios: a database, queues and fake embedder per scenario, worker processes.

use std::process::Stdio;
use std::time::Duration;

use quern_core::Job;
use quern_producer::{Producer, ProducerConfig};
use quern_testkit::fake_embedder::{self, FakeEmbedderConfig, RunningFakeEmbedder};
use quern_testkit::{TestDatabase, TestQueues, TEST_DIM};
use tokio::process::{Child, Command};

pub struct Scenario {
    pub name: &'static str,
    pub db: TestDatabase,
    pub queues: TestQueues,
    pub embedder: RunningFakeEmbedder,
}

impl Scenario {
    pub async fn start(name: &'static str, embedder: FakeEmbedderConfig) -> Scenario {
        quern_testkit::init_tracing();
        let db = TestDatabase::create(TEST_DIM).await;
        let queues = TestQueues::new(name);
        let embedder =
            fake_embedder::spawn(FakeEmbedderConfig { dim: TEST_DIM, ..embedder }).await.expect("fake embedder");
        Scenario { name, db, queues, embedder }
    }

    /// Worker flags for this scenario, plus `extra`.
    pub fn worker_args(&self, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = [
            "--amqp-url",
            &quern_testkit::amqp_url(),
            "--queue-prefix",
            self.queues.topology.prefix(),
            "--database-url",
            &self.db.url,
            "--embedding-url",
            &self.embedder.url(),
            "--embedding-dim",
            &TEST_DIM.to_string(),
            "--chunk-size",
            "300",
            "--chunk-overlap",
            "50",
            "--retry-tiers",
            "200ms,500ms,1s",
            "--max-attempts",
            "10",
            "--metrics-addr",
            "127.0.0.1:0",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    }

    /// Starts a `quern-worker` process; its log goes to `target/chaos-logs/<scenario>-<label>.log`.
    pub fn spawn_worker(&self, label: &str, extra: &[&str]) -> Child {
        let logs = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("chaos-logs");
        std::fs::create_dir_all(&logs).expect("log dir");
        let log = std::fs::File::create(logs.join(format!("{}-{label}.log", self.name))).expect("log file");
        Command::new(env!("CARGO_BIN_EXE_quern-worker"))
            .args(self.worker_args(&["--worker-id", label]))
            .args(extra)
            .env("RUST_LOG", "info,lapin=warn")
            .env_remove("QUERN_EMBEDDING_API_KEY")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .expect("start quern-worker")
    }

    /// Starts a worker and returns once its `/readyz` answers 200: a SIGTERM before its signal handler exists
    /// would kill it outright, which is not the drain a scenario means to test.
    pub async fn spawn_ready_worker(&self, label: &str, extra: &[&str]) -> Child {
        let port = quern_testkit::free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut args: Vec<&str> = extra.to_vec();
        args.extend(["--metrics-addr", addr.as_str()]);
        let child = self.spawn_worker(label, &args);
        let ready = quern_testkit::wait_until(Duration::from_secs(30), || async move {
            quern_testkit::http_get(port, "/readyz").await.is_some_and(|(status, _)| status == 200)
        })
        .await;
        assert!(ready, "worker {label} never became ready");
        child
    }

    /// Replaces the fake embedder by one with `config` on the same port (the workers' URL stays valid).
    pub async fn replace_embedder(&mut self, config: FakeEmbedderConfig) {
        let addr = self.embedder.local_addr();
        let old = std::mem::replace(
            &mut self.embedder,
            fake_embedder::spawn(FakeEmbedderConfig { dim: TEST_DIM, ..FakeEmbedderConfig::default() })
                .await
                .expect("spare"),
        );
        old.shutdown().await.expect("stop the old embedder");
        let fresh = fake_embedder::spawn_at(addr, FakeEmbedderConfig { dim: TEST_DIM, ..config })
            .await
            .expect("rebind the port");
        let spare = std::mem::replace(&mut self.embedder, fresh);
        let _ = spare.shutdown().await;
    }

    pub async fn producer(&self) -> Producer {
        Producer::connect(ProducerConfig::new(quern_testkit::amqp_url()).with_topology(self.queues.topology.clone()))
            .await
            .expect("producer")
    }

    /// Enqueues `jobs` in batches; returns the ids the broker confirmed.
    pub async fn enqueue(&self, jobs: &[Job]) -> Vec<uuid::Uuid> {
        let producer = self.producer().await;
        let mut confirmed = Vec::with_capacity(jobs.len());
        for batch in jobs.chunks(200) {
            confirmed.extend(producer.enqueue_many(batch).await.expect("enqueue"));
        }
        confirmed
    }

    pub async fn cleanup(self) {
        self.queues.delete().await;
        let connection = quern_queue::connect(&quern_testkit::amqp_url(), "chaos-cleanup").await.expect("connect");
        let channel = connection.create_channel().await.expect("channel");
        for tier in ["200ms", "500ms", "1s"] {
            let name = format!("{}.retry.{tier}", self.queues.topology.prefix());
            let _ = channel.queue_delete(name.as_str().into(), Default::default()).await;
        }
        self.db.drop_database().await;
    }
}

/// Runs `scripts/services.sh <command>` (restart-rabbitmq, restart-postgres).
pub async fn services(command: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/services.sh");
    let status = Command::new("bash").arg(script).arg(command).status().await.expect("run services.sh");
    assert!(status.success(), "scripts/services.sh {command} failed");
}

/// Sends SIGTERM to a child process.
pub fn sigterm(child: &Child) {
    let pid = child.id().expect("running").to_string();
    let status = std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
    assert!(status.success());
}

/// Waits for a child to exit, at most `limit`.
pub async fn exit_within(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    tokio::time::timeout(limit, child.wait()).await.expect("exited in time").expect("wait")
}

/// A document of `words` words from a small vocabulary, deterministic per seed.
pub fn text(seed: u64, words: usize) -> String {
    const VOCABULARY: &[&str] =
        &["quay", "tide", "gull", "net", "salt", "rope", "hull", "mast", "sail", "oar", "reef", "buoy", "keel", "fog"];
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(7);
    (0..words)
        .map(|i| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let word = VOCABULARY[(state >> 33) as usize % VOCABULARY.len()];
            if i % 10 == 9 {
                format!("{word}.")
            } else {
                word.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
