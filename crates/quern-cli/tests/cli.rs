//! The `quern` binary against the real services: migrate, enqueue a directory tree, status, search, bad flags.

use std::process::Output;
use std::time::Duration;

use clap::Parser;
use quern_testkit::fake_embedder::{self, FakeEmbedderConfig};
use quern_testkit::{TestDatabase, TestQueues, TEST_DIM};
use quern_worker::WorkerConfig;
use tokio_util::sync::CancellationToken;

struct Env {
    db: TestDatabase,
    queues: TestQueues,
    embedder: fake_embedder::RunningFakeEmbedder,
}

impl Env {
    async fn start(label: &str) -> Env {
        quern_testkit::init_tracing();
        Env {
            db: TestDatabase::create_empty().await,
            queues: TestQueues::new(label),
            embedder: fake_embedder::spawn(FakeEmbedderConfig { dim: TEST_DIM, ..Default::default() })
                .await
                .expect("embedder"),
        }
    }

    /// Runs `quern` with the service settings in its environment, as an operator's shell would have them.
    async fn quern(&self, args: &[&str]) -> Output {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_quern"))
            .args(args)
            .env("QUERN_AMQP_URL", quern_testkit::amqp_url())
            .env("QUERN_QUEUE_PREFIX", self.queues.topology.prefix())
            .env("QUERN_DATABASE_URL", &self.db.url)
            .env("QUERN_EMBEDDING_URL", self.embedder.url())
            .env("QUERN_EMBEDDING_DIM", TEST_DIM.to_string())
            .env_remove("QUERN_COLLECTION")
            .output()
            .await
            .expect("run quern")
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_enqueue_wait_status_and_search() {
    let env = Env::start("cli").await;
    let first = env.quern(&["migrate"]).await;
    assert!(first.status.success(), "{first:?}");
    assert!(stdout(&first).contains("applied migrations [1, 2]"), "{}", stdout(&first));
    let second = env.quern(&["migrate"]).await;
    assert!(second.status.success());
    assert!(stdout(&second).contains("up to date"), "migrate is idempotent");

    let corpus = std::env::temp_dir().join(quern_testkit::unique_name("quern_cli_corpus"));
    std::fs::create_dir_all(corpus.join("nested/deeper")).expect("mkdir");
    std::fs::write(corpus.join("harbour.txt"), "the harbour lantern guided ships past the beacon").expect("write");
    std::fs::write(corpus.join("nested/orchard.txt"), "apples ripen in the orchard before the winter harvest")
        .expect("write");
    std::fs::write(corpus.join("nested/deeper/ledger.md"), "the copper ledger recorded grain sold at the mill")
        .expect("write");
    std::fs::write(corpus.join("nested/binary.txt"), [0xff, 0xfe, 0x00]).expect("write");
    std::fs::write(corpus.join("nested/ignored.bin"), "not a listed extension").expect("write");

    let shutdown = CancellationToken::new();
    let config = WorkerConfig::try_parse_from([
        "quern-worker",
        "--amqp-url",
        &quern_testkit::amqp_url(),
        "--queue-prefix",
        env.queues.topology.prefix(),
        "--database-url",
        &env.db.url,
        "--embedding-url",
        &env.embedder.url(),
        "--embedding-dim",
        &TEST_DIM.to_string(),
        "--metrics-addr",
        "127.0.0.1:0",
    ])
    .expect("worker flags");
    let worker = tokio::spawn(quern_worker::run(config, shutdown.clone()));

    let corpus_arg = corpus.to_string_lossy().into_owned();
    let enqueue = env
        .quern(&["enqueue", &corpus_arg, "--collection", "docs", "--wait", "--print-ids", "--wait-timeout-secs", "60"])
        .await;
    assert!(enqueue.status.success(), "{enqueue:?}");
    let out = stdout(&enqueue);
    assert!(out.contains("enqueued 3 documents"), "{out}");
    assert!(out.contains("3 succeeded, 0 dead"), "{out}");
    let stderr = String::from_utf8_lossy(&enqueue.stderr);
    assert!(stderr.contains("binary.txt") && stderr.contains("not UTF-8"), "{stderr}");
    let ids: Vec<(String, String)> =
        out.lines().filter_map(|line| line.split_once('\t')).map(|(id, doc)| (id.to_owned(), doc.to_owned())).collect();
    let mut documents: Vec<&str> = ids.iter().map(|(_, doc)| doc.as_str()).collect();
    documents.sort();
    assert_eq!(documents, ["harbour.txt", "nested/deeper/ledger.md", "nested/orchard.txt"], "ids are relative paths");

    let status = env.quern(&["status", &ids[0].0, "--json"]).await;
    assert!(status.status.success());
    let record: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status json");
    assert_eq!(record["status"], "succeeded");
    assert_eq!(record["chunk_count"], 1);
    let unknown = env.quern(&["status", &uuid::Uuid::new_v4().to_string()]).await;
    assert_eq!(unknown.status.code(), Some(4));

    let search =
        env.quern(&["search", "who recorded the grain in a ledger", "--collection", "docs", "-k", "2", "--json"]).await;
    assert!(search.status.success(), "{search:?}");
    let answer: serde_json::Value = serde_json::from_slice(&search.stdout).expect("search json");
    assert_eq!(answer["results"].as_array().map(Vec::len), Some(2));
    assert_eq!(answer["results"][0]["document_id"], "nested/deeper/ledger.md");

    let delete = env.quern(&["delete", "--collection", "docs", "harbour.txt"]).await;
    assert!(delete.status.success());
    let client = env.db.client().await;
    let gone = quern_testkit::wait_until(Duration::from_secs(20), || async {
        let count: i64 = client
            .query_one("SELECT count(*) FROM quern_documents WHERE document_id = 'harbour.txt'", &[])
            .await
            .expect("count")
            .get(0);
        count == 0
    })
    .await;
    assert!(gone, "delete job processed");

    shutdown.cancel();
    worker.await.expect("task").expect("worker");
    let _ = std::fs::remove_dir_all(&corpus);
    env.queues.delete().await;
    env.db.drop_database().await;
}

#[tokio::test]
async fn bad_flags_are_named_in_the_error() {
    let env = Env::start("cliflags").await;
    let missing = env.quern(&["search", "query"]).await;
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("--collection"));
    let bad_k = env.quern(&["search", "q", "--collection", "c", "-k", "0"]).await;
    assert_eq!(bad_k.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_k.stderr).contains("--k"), "{}", String::from_utf8_lossy(&bad_k.stderr));
    let bad_prefix = env.quern(&["delete", "--queue-prefix", "has space", "--collection", "c", "d"]).await;
    assert_eq!(bad_prefix.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_prefix.stderr).contains("--queue-prefix"));
    let stdin_without_id = env.quern(&["enqueue", "-", "--collection", "c"]).await;
    assert!(!stdin_without_id.status.success());
    assert!(String::from_utf8_lossy(&stdin_without_id.stderr).contains("--document-id"));
    env.db.drop_database().await;
}
