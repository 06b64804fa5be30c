//! `quern status` without a job id against the real services: queue depths and consumers, jobs by status over a
//! window, both scoped to one queue prefix, the commonest reasons jobs died, and each half still printed when the
//! other service is down.

use std::process::Output;

use clap::Parser;
use quern_core::Outcome;
use quern_producer::{Job, Producer, ProducerConfig};
use quern_testkit::{TestDatabase, TestQueues, TEST_DIM, TEST_RETRY_TIERS};
use quern_worker::{Pipeline, WorkerConfig};
use serde_json::{json, Value};

/// Where nothing listens.
const DEAD_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:1/%2f";
const DEAD_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:1/postgres";

/// Runs `quern` against `queues` and `database_url`, with the broker at `amqp_url`.
async fn quern(queues: &TestQueues, amqp_url: &str, database_url: &str, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_quern"))
        .args(args)
        .env("QUERN_AMQP_URL", amqp_url)
        .env("QUERN_QUEUE_PREFIX", queues.topology.prefix())
        .env("QUERN_DATABASE_URL", database_url)
        .env_remove("QUERN_RETRY_TIERS")
        .output()
        .await
        .expect("run quern")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn json_of(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(output)))
}

/// Inserts `count` jobs of `queues` (`None`: of no prefix, as workers before migration 3 wrote them) in `status`,
/// last updated `ago_secs` ago.
async fn insert_jobs(
    db: &TestDatabase,
    queues: Option<&TestQueues>,
    status: &str,
    error: Option<&str>,
    ago_secs: f64,
    count: i32,
) {
    let prefix = queues.map(|queues| queues.topology.prefix());
    db.client()
        .await
        .execute(
            "INSERT INTO quern_jobs
                 (job_id, collection, document_id, status, attempts, last_error, updated_at, queue_prefix)
             SELECT gen_random_uuid(), 'docs', 'doc-' || i, $1, 1, $2, now() - make_interval(secs => $3), $5
             FROM generate_series(1, $4::int4) AS i",
            &[&status, &error, &ago_secs, &count, &prefix],
        )
        .await
        .expect("insert jobs");
}

/// Three jobs in the work queue (through the producer, which also declares the dead-letter queue).
async fn publish_three(queues: &TestQueues) {
    let config = ProducerConfig::new(quern_testkit::amqp_url()).with_topology(queues.topology.clone());
    let producer = Producer::connect(config).await.expect("producer");
    let jobs: Vec<Job> = (0..3).map(|i| Job::upsert("docs", format!("doc-{i}"), "some text")).collect();
    producer.enqueue_many(&jobs).await.expect("enqueue");
}

/// A queue listed in the overview: `(name, messages, consumers)`.
fn queue_rows(overview: &Value) -> Vec<(String, Value, Value)> {
    overview["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .map(|q| (q["name"].as_str().expect("name").to_owned(), q["messages"].clone(), q["consumers"].clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overview_shows_queue_depths_recent_jobs_and_why_jobs_died() {
    quern_testkit::init_tracing();
    let queues = TestQueues::new("status");
    let db = TestDatabase::create(TEST_DIM).await;
    publish_three(&queues).await;

    let long_error = format!("embedding API refused the batch: {}", "x".repeat(200));
    let ours = Some(&queues);
    insert_jobs(&db, ours, "queued", None, 0.0, 1).await;
    insert_jobs(&db, ours, "running", None, 60.0, 2).await;
    insert_jobs(&db, ours, "succeeded", None, 10.0, 4).await;
    insert_jobs(&db, ours, "failed", Some("embedding API answered 503"), 5.0, 1).await;
    insert_jobs(&db, ours, "dead", Some("contract: `text` is missing"), 30.0, 2).await;
    insert_jobs(&db, ours, "dead", Some(&long_error), 20.0, 1).await;
    // Outside the default window of 1h.
    insert_jobs(&db, ours, "succeeded", None, 7_200.0, 5).await;
    insert_jobs(&db, ours, "dead", Some("an old reason"), 7_200.0, 3).await;

    let prefix = queues.topology.prefix().to_owned();
    let amqp = quern_testkit::amqp_url();
    let output = quern(&queues, &amqp, &db.url, &["status", "--json"]).await;
    assert!(output.status.success(), "{output:?}");
    let overview = json_of(&output);
    let null = Value::Null;
    assert_eq!(
        queue_rows(&overview),
        [
            (format!("{prefix}.ingest"), json!(3), json!(0)),
            (format!("{prefix}.retry.1s"), null.clone(), null.clone()),
            (format!("{prefix}.retry.10s"), null.clone(), null.clone()),
            (format!("{prefix}.retry.60s"), null.clone(), null.clone()),
            (format!("{prefix}.retry.300s"), null.clone(), null.clone()),
            (format!("{prefix}.dead"), json!(0), json!(0)),
        ],
        "{overview}"
    );
    assert_eq!(overview["queue_prefix"], prefix);
    assert_eq!(
        overview["jobs"],
        json!({
            "window_secs": 3600, "queued": 1, "running": 2, "succeeded": 4, "failed": 1, "dead": 3, "without_prefix": 0
        })
    );
    let truncated: String = long_error.chars().take(100).collect();
    assert_eq!(
        overview["dead_reasons"],
        json!([{"error": "contract: `text` is missing", "count": 2}, {"error": truncated, "count": 1}])
    );

    // A wider window takes the old rows in; the delay queues of other tiers are named after those tiers.
    let channel =
        quern_queue::connect(&amqp, "quern-test").await.expect("connect").create_channel().await.expect("channel");
    quern_queue::declare_retry_queues(&channel, &queues.topology, TEST_RETRY_TIERS).await.expect("retry queues");
    let wide =
        quern(&queues, &amqp, &db.url, &["status", "--json", "--window", "3h", "--retry-tiers", "100ms,200ms"]).await;
    assert!(wide.status.success(), "{wide:?}");
    let wide = json_of(&wide);
    assert_eq!(wide["jobs"]["window_secs"], 10_800);
    assert_eq!(wide["jobs"]["succeeded"], 9);
    assert_eq!(wide["jobs"]["dead"], 6);
    assert_eq!(wide["dead_reasons"][0], json!({"error": "an old reason", "count": 3}));
    let names: Vec<String> = queue_rows(&wide).into_iter().map(|(name, _, _)| name).collect();
    assert_eq!(
        names,
        [
            format!("{prefix}.ingest"),
            format!("{prefix}.retry.100ms"),
            format!("{prefix}.retry.200ms"),
            format!("{prefix}.dead")
        ]
    );
    assert!(queue_rows(&wide).iter().all(|(_, messages, _)| !messages.is_null()), "{wide}");

    // The table names every queue and says which are missing.
    let table = quern(&queues, &amqp, &db.url, &["status"]).await;
    assert!(table.status.success(), "{table:?}");
    let text = stdout(&table);
    for queue in ["ingest", "retry.1s", "retry.10s", "retry.60s", "retry.300s", "dead"] {
        assert!(text.contains(&format!("{prefix}.{queue}")), "{queue} in\n{text}");
    }
    assert!(text.contains("missing"), "{text}");
    assert!(text.starts_with(&format!("queues and jobs of prefix `{prefix}`")), "{text}");
    assert!(text.contains("jobs updated in the last 1h"), "{text}");
    assert!(text.contains("contract: `text` is missing"), "{text}");

    queues.delete().await;
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_half_prints_when_the_other_service_is_down() {
    quern_testkit::init_tracing();
    let queues = TestQueues::new("statusdown");
    let db = TestDatabase::create(TEST_DIM).await;
    publish_three(&queues).await;
    insert_jobs(&db, Some(&queues), "succeeded", None, 1.0, 2).await;
    let prefix = queues.topology.prefix().to_owned();
    let amqp = quern_testkit::amqp_url();

    let no_database = quern(&queues, &amqp, DEAD_DATABASE_URL, &["status"]).await;
    assert_eq!(no_database.status.code(), Some(1), "{no_database:?}");
    assert!(stdout(&no_database).contains(&format!("{prefix}.ingest")), "{}", stdout(&no_database));
    assert!(stdout(&no_database).contains(&format!("{prefix}.dead")), "{}", stdout(&no_database));
    assert!(stderr(&no_database).contains("jobs:"), "{}", stderr(&no_database));
    let no_database = quern(&queues, &amqp, DEAD_DATABASE_URL, &["status", "--json"]).await;
    assert_eq!(no_database.status.code(), Some(1));
    let overview = json_of(&no_database);
    assert_eq!(overview["queues"][0], json!({"name": format!("{prefix}.ingest"), "messages": 3, "consumers": 0}));
    assert!(overview["jobs"].is_null(), "{overview}");

    let no_broker = quern(&queues, DEAD_AMQP_URL, &db.url, &["status", "--json"]).await;
    assert_eq!(no_broker.status.code(), Some(1), "{no_broker:?}");
    let overview = json_of(&no_broker);
    assert!(overview["queues"].is_null(), "{overview}");
    assert_eq!(overview["jobs"]["succeeded"], 2);
    assert!(
        stderr(&no_broker).contains("queues:") && stderr(&no_broker).contains("127.0.0.1:1"),
        "{}",
        stderr(&no_broker)
    );

    queues.delete().await;
    db.drop_database().await;
}

#[tokio::test]
async fn a_job_id_still_shows_one_job_and_overview_flags_are_checked() {
    let queues = TestQueues::new("statusflags");
    let amqp = quern_testkit::amqp_url();
    let unknown = quern(&queues, &amqp, DEAD_DATABASE_URL, &["status", &uuid::Uuid::new_v4().to_string()]).await;
    assert_eq!(unknown.status.code(), Some(1), "an unreachable database is an error, not an unknown job");

    let db = TestDatabase::create(TEST_DIM).await;
    let unknown = quern(&queues, DEAD_AMQP_URL, &db.url, &["status", &uuid::Uuid::new_v4().to_string()]).await;
    assert_eq!(unknown.status.code(), Some(4), "the broker is not needed for one job: {unknown:?}");

    let window_with_job =
        quern(&queues, &amqp, &db.url, &["status", &uuid::Uuid::new_v4().to_string(), "--window", "2h"]).await;
    assert_eq!(window_with_job.status.code(), Some(2));
    for (flag, value) in [("--window", "soon"), ("--window", "1h,2h"), ("--retry-tiers", "1s,later")] {
        let bad = quern(&queues, &amqp, &db.url, &["status", flag, value]).await;
        assert_eq!(bad.status.code(), Some(2), "{flag} {value}: {bad:?}");
        assert!(stderr(&bad).contains(flag), "{}", stderr(&bad));
    }
    db.drop_database().await;
}

/// A worker's pipeline consuming from `queues`' prefix, as `quern-worker --queue-prefix` builds it; jobs are fed
/// to it directly (no consumer), which records them as the worker would.
async fn pipeline_of(queues: &TestQueues, db: &TestDatabase) -> Pipeline {
    let config = WorkerConfig::try_parse_from([
        "quern-worker",
        "--queue-prefix",
        queues.topology.prefix(),
        "--database-url",
        &db.url,
        "--embedding-dim",
        &TEST_DIM.to_string(),
    ])
    .expect("worker flags");
    let pipeline = quern_worker::consumer::build_pipeline(&config).await.expect("pipeline");
    pipeline.with_queue_prefix(queues.topology.prefix())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_counted_for_the_queue_prefix_shown_only() {
    quern_testkit::init_tracing();
    let (a, b) = (TestQueues::new("statusa"), TestQueues::new("statusb"));
    let db = TestDatabase::create(TEST_DIM).await;
    // Deletions need no embedding; a body missing its fields is dead at once, recorded by its failure alone.
    let (pipeline_a, pipeline_b) = (pipeline_of(&a, &db).await, pipeline_of(&b, &db).await);
    let a_jobs: Vec<Job> = (0..2).map(|i| Job::delete("docs", format!("a-{i}"))).collect();
    for job in &a_jobs {
        assert!(matches!(pipeline_a.process_delivery(&job.encode(), 0).await, Outcome::Ack));
    }
    let malformed = format!(r#"{{"job_id": "{}", "collection": "docs"}}"#, uuid::Uuid::now_v7());
    assert!(matches!(pipeline_a.process_delivery(malformed.as_bytes(), 0).await, Outcome::DeadLetter { .. }));
    for i in 0..3 {
        let job = Job::delete("docs", format!("b-{i}"));
        assert!(matches!(pipeline_b.process_delivery(&job.encode(), 0).await, Outcome::Ack));
    }
    insert_jobs(&db, None, "succeeded", None, 1.0, 4).await;

    let amqp = quern_testkit::amqp_url();
    let of_a = quern(&a, &amqp, &db.url, &["status", "--json"]).await;
    assert!(of_a.status.success(), "{of_a:?}");
    let of_a = json_of(&of_a);
    assert_eq!(of_a["queue_prefix"], a.topology.prefix());
    assert_eq!(
        of_a["jobs"],
        json!({
            "window_secs": 3600, "queued": 0, "running": 0, "succeeded": 2, "failed": 0, "dead": 1, "without_prefix": 4
        })
    );
    let reasons = of_a["dead_reasons"].as_array().expect("reasons");
    assert_eq!(reasons.len(), 1, "{of_a}");
    assert!(reasons[0]["error"].as_str().is_some_and(|e| e.contains("document_id")), "{of_a}");
    assert_eq!(of_a["queues"][0]["name"], a.topology.ingest_queue(), "the queues are of the same prefix");

    let of_b = json_of(&quern(&b, &amqp, &db.url, &["status", "--json"]).await);
    assert_eq!(of_b["jobs"]["succeeded"], 3);
    assert_eq!(of_b["jobs"]["dead"], 0);
    assert_eq!(of_b["dead_reasons"], json!([]));

    let table = quern(&a, &amqp, &db.url, &["status"]).await;
    let text = stdout(&table);
    assert!(text.starts_with(&format!("queues and jobs of prefix `{}`", a.topology.prefix())), "{text}");
    assert!(text.contains("4 jobs without a prefix"), "{text}");

    let one = quern(&a, &amqp, &db.url, &["status", &a_jobs[0].job_id.to_string(), "--json"]).await;
    assert!(one.status.success(), "{one:?}");
    let one = json_of(&one);
    assert_eq!(one["status"], "succeeded");
    assert_eq!(one["queue_prefix"], a.topology.prefix());
    let one = quern(&a, &amqp, &db.url, &["status", &a_jobs[0].job_id.to_string()]).await;
    assert!(stdout(&one).contains(&format!("prefix      {}", a.topology.prefix())), "{}", stdout(&one));

    db.drop_database().await;
}

/// The fleet's config file, as `quern-worker --print-config` writes it, read by `quern --config`: the settings both
/// take (queue prefix, database, retry tiers) are used, the worker's own (`prefetch`) passed over. The broker's
/// password comes from a file, as a Kubernetes secret is mounted, and is needed: the broker refuses the user
/// without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reads_the_workers_config_file_and_a_password_file() {
    quern_testkit::init_tracing();
    let queues = TestQueues::new("statusfile");
    let db = TestDatabase::create(TEST_DIM).await;
    publish_three(&queues).await;
    insert_jobs(&db, Some(&queues), "succeeded", None, 1.0, 2).await;
    let prefix = queues.topology.prefix().to_owned();
    let flags =
        ["--queue-prefix", &prefix, "--database-url", &db.url, "--retry-tiers", "100ms,200ms", "--prefetch", "64"];
    let args = std::iter::once("quern-worker").chain(flags).map(std::ffi::OsString::from).collect();
    let rendered = quern_worker::config_file::load(args).expect("worker flags").render();
    assert!(rendered.contains("prefetch = 64"), "{rendered}");

    let dir = std::env::temp_dir().join(format!("quern-cli-config-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (config_file, password_file) = (dir.join("fleet.toml"), dir.join("amqp-password"));
    std::fs::write(&config_file, &rendered).expect("write config");
    let amqp = quern_testkit::amqp_url();
    let (scheme, rest) = amqp.split_once("://").expect("a URL");
    let (userinfo, host) = rest.split_once('@').expect("the test broker URL names a user");
    let (user, password) = userinfo.split_once(':').expect("and a password");
    std::fs::write(&password_file, format!("{password}\n")).expect("write password");
    let user_only = format!("{scheme}://{user}@{host}");

    let status = |amqp_url: &str| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_quern"));
        command
            .args(["status", "--json", "--config"])
            .arg(&config_file)
            .env("QUERN_AMQP_URL", amqp_url)
            .env_remove("QUERN_QUEUE_PREFIX")
            .env_remove("QUERN_DATABASE_URL")
            .env_remove("QUERN_RETRY_TIERS")
            .env_remove("QUERN_CONFIG")
            .env("QUERN_AMQP_PASSWORD_FILE", &password_file);
        async move { command.output().await.expect("run quern") }
    };

    let output = status(&user_only).await;
    assert!(output.status.success(), "{output:?}");
    let overview = json_of(&output);
    assert_eq!(overview["queue_prefix"], prefix);
    let names: Vec<String> = queue_rows(&overview).into_iter().map(|(name, _, _)| name).collect();
    assert_eq!(
        names,
        [
            format!("{prefix}.ingest"),
            format!("{prefix}.retry.100ms"),
            format!("{prefix}.retry.200ms"),
            format!("{prefix}.dead")
        ],
        "the file's prefix and retry tiers"
    );
    assert_eq!(overview["jobs"]["succeeded"], 2, "the file's database: {overview}");

    // The file's password is the one sent: a wrong one is refused by the broker. (A URL without a password and
    // no file would not show it: the AMQP client then sends `guest`, the test broker's password.)
    std::fs::write(&password_file, "not-the-password\n").expect("write password");
    let refused = status(&user_only).await;
    assert_eq!(refused.status.code(), Some(1), "a wrong password, no broker: {refused:?}");
    assert!(json_of(&refused)["queues"].is_null());
    assert_eq!(json_of(&refused)["jobs"]["succeeded"], 2, "the database half still answers");

    let twice = status(&amqp).await;
    assert_eq!(twice.status.code(), Some(1), "{twice:?}");
    let message = stderr(&twice);
    assert!(message.contains("--amqp-password-file") && message.contains("holds a password already"), "{message}");
    assert!(!message.contains(&format!(":{password}@")), "no password in the message: {message}");

    std::fs::remove_dir_all(&dir).expect("remove temp dir");
    queues.delete().await;
    db.drop_database().await;
}
