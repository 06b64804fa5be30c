//! The `quern` binary against the real services: migrate, enqueue a directory tree, status, search, bad flags,
//! and a closed stdout (`quern ... | head`) ending a command quietly.

use std::process::{Output, Stdio};
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

    /// `quern` with the service settings in its environment, as an operator's shell would have them.
    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_quern"));
        command
            .args(args)
            .env("QUERN_AMQP_URL", quern_testkit::amqp_url())
            .env("QUERN_QUEUE_PREFIX", self.queues.topology.prefix())
            .env("QUERN_DATABASE_URL", &self.db.url)
            .env("QUERN_EMBEDDING_URL", self.embedder.url())
            .env("QUERN_EMBEDDING_DIM", TEST_DIM.to_string())
            .env_remove("QUERN_COLLECTION");
        command
    }

    /// Runs `quern` to its end.
    async fn quern(&self, args: &[&str]) -> Output {
        self.command(args).output().await.expect("run quern")
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
    assert!(stdout(&first).contains("applied migrations [1, 2, 3, 4, 5, 6] (vector dimension"), "{}", stdout(&first));
    assert!(stdout(&first).contains("stored as vector"), "{}", stdout(&first));
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

/// Runs `quern args` with its stdout a pipe the test closes after reading `lines_read` lines (0: before the
/// command can have written anything, since it first has to reach the services).
async fn with_stdout_closed_after(env: &Env, args: &[&str], lines_read: usize) -> (Option<i32>, String) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = env.command(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn quern");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    for _ in 0..lines_read {
        let mut line = String::new();
        stdout.read_line(&mut line).await.expect("read a line");
        assert!(!line.is_empty(), "quern printed fewer than {lines_read} lines");
    }
    drop(stdout);
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("quern ends")
        .expect("wait for quern");
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_ends_a_command_quietly() {
    let env = Env::start("clipipe").await;
    assert!(env.quern(&["migrate"]).await.status.success());

    // `quern delete | head -1`: 2,000 lines of about 60 bytes overflow the pipe's buffer, so the reader going away
    // after the first line is certain to be seen by a later write.
    let ids: Vec<String> = (0..2000).map(|i| format!("a-fairly-long-document-id-{i:05}")).collect();
    let mut args = vec!["delete", "--collection", "docs"];
    args.extend(ids.iter().map(String::as_str));
    let (code, stderr) = with_stdout_closed_after(&env, &args, 1).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.is_empty(), "nothing to say, least of all a panic: {stderr}");

    for args in [vec!["status"], vec!["status", "--json"], vec!["index", "status"]] {
        let (code, stderr) = with_stdout_closed_after(&env, &args, 0).await;
        assert_eq!(code, Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    // Enqueueing is the point of `quern enqueue --print-ids`, its output is not: every batch is still published.
    let corpus = std::env::temp_dir().join(quern_testkit::unique_name("quern_cli_pipe_corpus"));
    std::fs::create_dir_all(&corpus).expect("mkdir");
    for i in 0..30 {
        std::fs::write(corpus.join(format!("doc-{i:02}.txt")), format!("document number {i}")).expect("write");
    }
    let corpus_arg = corpus.to_string_lossy().into_owned();
    let ready_before = env.queues.ready_count(&env.queues.topology.ingest_queue()).await;
    let enqueue = ["enqueue", &corpus_arg, "--collection", "docs", "--print-ids", "--batch", "10"];
    let (code, stderr) = with_stdout_closed_after(&env, &enqueue, 0).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(env.queues.ready_count(&env.queues.topology.ingest_queue()).await, ready_before + 30);
    let _ = std::fs::remove_dir_all(&corpus);

    // Stopping early hides no failure: the half of the overview that did not answer is still reported, status 1.
    let nowhere = "postgres://postgres@127.0.0.1:1/postgres";
    let (code, stderr) = with_stdout_closed_after(&env, &["status", "--database-url", nowhere], 0).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("jobs:") && !stderr.contains("panicked"), "{stderr}");
    let unknown_job = uuid::Uuid::new_v4().to_string();
    let (code, stderr) = with_stdout_closed_after(&env, &["status", &unknown_job], 0).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    env.queues.delete().await;
    env.db.drop_database().await;
}
