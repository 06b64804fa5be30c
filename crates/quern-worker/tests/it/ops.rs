//! What ops see: `/metrics` with the right counts after known jobs, `/healthz`, `/readyz`, and JSON log lines
//! that parse and carry the job fields. Runs the worker binary, so its metrics are its own.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use quern_testkit::fake_embedder::FakeEmbedderConfig;
use quern_testkit::{free_port, http_get, wait_until};

use crate::helpers::{document_text, test_chunker, upsert, Harness};

/// Samples of a Prometheus exposition: (name, labels, value).
fn samples(exposition: &str) -> Vec<(String, HashMap<String, String>, f64)> {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let labels = rest
                        .trim_end_matches('}')
                        .split(',')
                        .filter_map(|pair| pair.split_once('='))
                        .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
                        .collect();
                    (name.to_owned(), labels)
                }
                None => (series.to_owned(), HashMap::new()),
            };
            Some((name, labels, value.parse().ok()?))
        })
        .collect()
}

/// The value of `name` whose labels include `labels`.
fn value(samples: &[(String, HashMap<String, String>, f64)], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
        .map(|(_, _, v)| *v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_and_json_logs_after_a_run_of_known_jobs() {
    let harness = Harness::start("ops", FakeEmbedderConfig::default()).await;
    let producer = harness.producer().await;
    let jobs: Vec<_> =
        (0..4).map(|i| upsert("c", &format!("doc-{i}"), &document_text(i, 60 + 30 * i as usize))).collect();
    let chunks: usize = jobs.iter().map(|j| test_chunker().split(&j.text).len()).sum();
    let ids = producer.enqueue_many(&jobs).await.expect("enqueue");
    let (_connection, channel) = harness.queues.raw_channel().await;
    harness.queues.publish_raw(&channel, b"{not json").await;

    let port = free_port();
    let log_path = std::env::temp_dir().join(quern_testkit::unique_name("quern_ops_log"));
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut args = harness.worker_args(&["--log-format", "json"]);
    args.retain(|a| a != "--metrics-addr" && a != "127.0.0.1:0");
    args.extend(["--metrics-addr".to_owned(), format!("127.0.0.1:{port}")]);
    let mut worker = tokio::process::Command::new(env!("CARGO_BIN_EXE_quern-worker"))
        .args(&args[1..])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .expect("start quern-worker");

    let store = harness.db.store();
    let done = wait_until(Duration::from_secs(30), || async {
        store.count_finished(&ids).await.map(|c| c.succeeded == 4).unwrap_or(false)
    })
    .await;
    assert!(done, "the jobs succeed");
    // Queue depths are polled every 5 s: wait for a poll that sees the dead letter.
    let mut exposition = String::new();
    let mut polled = false;
    for _ in 0..60 {
        if let Some((200, body)) = http_get(port, "/metrics").await {
            polled = value(&samples(&body), "quern_queue_messages", &[("queue", "dead")]) == Some(1.0);
            exposition = body;
            if polled {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(polled, "queue depth gauge never showed the dead letter:\n{exposition}");
    let metrics = samples(&exposition);
    let get = |name: &str, labels: &[(&str, &str)]| {
        value(&metrics, name, labels).unwrap_or_else(|| panic!("{name} {labels:?} missing:\n{exposition}"))
    };
    let requests = harness.embedder.stats().snapshot().requests as f64;
    assert_eq!(get("quern_jobs_received_total", &[]), 5.0);
    assert_eq!(get("quern_jobs_succeeded_total", &[]), 4.0);
    assert_eq!(get("quern_jobs_dead_lettered_total", &[("reason_class", "permanent"), ("reason", "contract")]), 1.0);
    assert_eq!(get("quern_chunks_embedded_total", &[]), chunks as f64);
    assert_eq!(get("quern_chunks_reused_total", &[]), 0.0);
    assert_eq!(get("quern_embedding_request_duration_seconds_count", &[("outcome", "ok")]), requests);
    assert_eq!(get("quern_embedding_request_inputs_count", &[]), requests);
    assert_eq!(get("quern_embedding_request_inputs_sum", &[]), chunks as f64);
    assert_eq!(get("quern_embedding_permits", &[]), 16.0);
    // Adaptive by default: wherever the run left it, within 1..=16.
    let limit = get("quern_embedding_concurrency_limit", &[]);
    assert!((1.0..=16.0).contains(&limit), "limit {limit}");
    assert_eq!(get("quern_embedding_encoding_fallbacks_total", &[]), 0.0, "the fake embedder speaks base64");
    assert_eq!(get("quern_embedding_provider_available", &[]), 1.0);
    assert_eq!(get("quern_embedding_permits_in_use", &[]), 0.0);
    assert_eq!(get("quern_jobs_in_flight", &[]), 0.0);
    assert_eq!(get("quern_db_write_duration_seconds_count", &[("op", "upsert")]), 4.0);
    assert_eq!(get("quern_job_duration_seconds_count", &[("span", "processing")]), 5.0);
    assert_eq!(get("quern_job_duration_seconds_count", &[("span", "enqueue_to_commit")]), 4.0);
    assert_eq!(get("quern_queue_messages", &[("queue", "ingest")]), 0.0);
    assert_eq!(get("quern_broker_reconnects_total", &[]), 0.0);
    assert!(get("quern_db_connections_opened_total", &[]) >= 1.0);
    assert_eq!(get("quern_ready", &[]), 1.0);
    for job in &jobs {
        assert!(
            !exposition.contains(&job.job_id.to_string()) && !exposition.contains(&job.document_id),
            "unbounded label"
        );
    }
    assert_eq!(http_get(port, "/healthz").await.map(|(s, _)| s), Some(200));
    let (status, body) = http_get(port, "/readyz").await.expect("readyz answers");
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).expect("json")["ready"], true);

    let pid = worker.id().expect("running").to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
    assert!(tokio::time::timeout(Duration::from_secs(30), worker.wait())
        .await
        .expect("exits")
        .expect("wait")
        .success());

    let logs = std::fs::read_to_string(&log_path).expect("read log");
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}")))
        .collect();
    assert!(lines.len() >= 5, "{logs}");
    let succeeded: Vec<&serde_json::Value> = lines.iter().filter(|l| l["message"] == "job succeeded").collect();
    assert_eq!(succeeded.len(), 4, "{logs}");
    for line in succeeded {
        let span = &line["span"];
        let job_id = span["job_id"].as_str().expect("job_id on the line");
        assert!(ids.iter().any(|id| id.to_string() == job_id));
        assert_eq!(span["collection"], "c");
        assert!(span["document_id"].as_str().is_some_and(|d| d.starts_with("doc-")));
        assert_eq!(span["attempt"], 1);
        let trace_id = span["trace_id"].as_str().expect("trace_id on the line");
        assert!(trace_id.len() == 32 && trace_id.bytes().all(|b| b.is_ascii_hexdigit()), "{trace_id}");
    }
    let secret = quern_testkit::amqp_url();
    if let Some(password) = secret
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .and_then(|(auth, _)| auth.split_once(':'))
        .map(|(_, p)| p.to_owned())
    {
        assert!(!logs.contains(&format!(":{password}@")), "a password appears in the logs");
    }
    let _ = std::fs::remove_file(&log_path);
    harness.cleanup().await;
}

/// The worker binary, with no `QUERN_*` variable from the test's own environment.
fn worker_binary() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_quern-worker"));
    for (key, _) in std::env::vars_os().filter(|(k, _)| k.to_string_lossy().starts_with("QUERN_")) {
        command.env_remove(key);
    }
    command
}

/// The printed lines without the comments saying where each value came from.
fn values(printed: &str) -> Vec<String> {
    printed.lines().map(|line| line.split_once("  # ").map_or(line, |(value, _)| value).to_owned()).collect()
}

#[test]
fn the_binary_prints_its_config_without_secrets_and_names_a_bad_setting() {
    let print = worker_binary()
        .args([
            "--print-config",
            "--amqp-url",
            "amqp://ops:hunter2@broker:5672/%2f",
            "--embedding-api-key",
            "sk-live-abc",
        ])
        .env("QUERN_DATABASE_URL", "postgres://quern:pa55word@db:5432/quern")
        .output()
        .expect("run quern-worker");
    assert!(print.status.success());
    let out = String::from_utf8_lossy(&print.stdout);
    for secret in ["hunter2", "sk-live-abc", "pa55word"] {
        assert!(!out.contains(secret), "{secret} printed:\n{out}");
    }
    for line in [
        "# amqp_url = \"amqp://ops:***@broker:5672/%2f\"  # flag; holds a password, so not printed: set QUERN_AMQP_URL",
        "# database_url = \"postgres://quern:***@db:5432/quern\"  # env QUERN_DATABASE_URL; holds a password, so not \
         printed: set QUERN_DATABASE_URL",
        "# embedding_api_key: not printed (a secret); set QUERN_EMBEDDING_API_KEY  # flag",
    ] {
        assert!(out.contains(line), "{line} missing:\n{out}");
    }

    let bad = worker_binary().env("QUERN_CHUNK_OVERLAP", "plenty").output().expect("run quern-worker");
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("--chunk-overlap") && err.contains("QUERN_CHUNK_OVERLAP"), "{err}");
}

/// `--print-config > FILE`, then `--config FILE` alone: the same effective settings, and no secret on the way.
#[test]
fn the_printed_config_is_a_config_file_giving_the_same_settings() {
    let first = worker_binary()
        .args([
            "--print-config",
            "--prefetch",
            "64",
            "--retry-tiers",
            "2s,1m",
            "--chars-per-token",
            "3.5",
            "--embedding-adaptive-concurrency",
            "--worker-id",
            "w-7",
            "--embedding-api-key",
            "sk-live-abc",
        ])
        .env("QUERN_QUEUE_PREFIX", "ingest_a")
        .output()
        .expect("run quern-worker");
    assert!(first.status.success());
    let printed = String::from_utf8(first.stdout).expect("utf-8");
    assert!(printed.contains("prefetch = 64  # flag"), "{printed}");
    assert!(printed.contains("retry_tiers = [\"2s\", \"1m\"]  # flag"), "{printed}");
    assert!(printed.contains("embedding_adaptive_concurrency = true  # flag"), "{printed}");
    assert!(!printed.contains("sk-live-abc"), "{printed}");

    let path = std::env::temp_dir().join(format!("{}.toml", quern_testkit::unique_name("quern_print_config")));
    std::fs::write(&path, &printed).expect("write the printed config");
    let again = worker_binary()
        .args(["--config", path.to_str().expect("utf-8"), "--print-config"])
        .output()
        .expect("run quern-worker");
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    let reread = String::from_utf8(again.stdout).expect("utf-8");
    // Every line the same but the API key's, which the file could not carry (below).
    let settings = |printed: &str| -> Vec<String> {
        values(printed).into_iter().filter(|line| !line.starts_with("# embedding_api_key")).collect()
    };
    assert_eq!(settings(&reread), settings(&printed), "the same settings, line for line:\n{reread}");
    assert!(reread.contains("queue_prefix = \"ingest_a\"  # config file"), "{reread}");
    // The API key was left out: a comment says where it must come from, and it no longer is set.
    assert!(printed.contains("# embedding_api_key: not printed (a secret); set QUERN_EMBEDDING_API_KEY"), "{printed}");
    assert!(reread.contains("# embedding_api_key is not set"), "{reread}");
    let _ = std::fs::remove_file(&path);
}

/// A second worker on a taken port: exit 1 at once, a message saying what to do, and no colour codes in a log
/// that is not a terminal.
#[test]
fn a_taken_metrics_port_fails_at_once_saying_what_to_do() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let output = worker_binary()
        .args(["--metrics-addr", &addr.to_string(), "--log-format", "text"])
        .env("RUST_LOG", "info")
        .output()
        .expect("run quern-worker");
    assert_eq!(output.status.code(), Some(1));
    let err = String::from_utf8_lossy(&output.stderr);
    let expected = format!(
        "quern-worker: cannot listen on --metrics-addr {addr}: address already in use (is another worker running \
         on this host? give each worker its own --metrics-addr / QUERN_METRICS_ADDR, e.g. 127.0.0.1:{}, or \
         127.0.0.1:0 for any free port)",
        addr.port() + 1
    );
    assert!(err.lines().any(|line| line == expected), "{err}");
    assert!(err.lines().any(|line| line.contains("ERROR")), "the log line is there too: {err}");
    assert!(!err.contains('\u{1b}'), "colour codes in a log that is not a terminal: {err:?}");
}
