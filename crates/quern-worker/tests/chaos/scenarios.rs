//! The fault scenarios. Each fails on any lost or duplicated job and prints its figures.

use std::time::Duration;

use quern_core::{Chunker, Job};
use quern_testkit::fake_embedder::FakeEmbedderConfig;
use quern_testkit::wait_until;
use uuid::Uuid;

use crate::ledger::{settle, Figures};
use crate::support::{exit_within, services, sigterm, text, Scenario};

fn chunker() -> Chunker {
    Chunker::new(300, 50).expect("valid")
}

fn jobs(count: u64, words: usize) -> Vec<Job> {
    (0..count).map(|i| Job::upsert("c", format!("doc-{i:04}"), text(i, words))).collect()
}

async fn wait_succeeded(scenario: &Scenario, ids: &[Uuid], at_least: u64, limit: Duration) -> bool {
    let store = scenario.db.store();
    wait_until(limit, || async { store.count_finished(ids).await.map(|c| c.succeeded >= at_least).unwrap_or(false) })
        .await
}

fn assert_nothing_lost(figures: &Figures) {
    assert_eq!(figures.lost, 0, "lost jobs: {figures:?}");
    assert_eq!(figures.duplicated, 0, "duplicated chunks: {figures:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault injection: run with scripts/chaos.sh"]
async fn embedder_answers_30_percent_500_and_10_percent_429() {
    let faults = FakeEmbedderConfig { error_rate: 0.3, throttle_rate: 0.1, latency_ms: 5, ..Default::default() };
    let scenario = Scenario::start("faulty_embedder", faults).await;
    let jobs = jobs(500, 120);
    let confirmed = scenario.enqueue(&jobs).await;
    let mut worker = scenario.spawn_worker("w1", &[]);
    let done = wait_succeeded(&scenario, &confirmed, 500, Duration::from_secs(240)).await;
    sigterm(&worker);
    assert!(exit_within(&mut worker, Duration::from_secs(40)).await.success());
    let stats = scenario.embedder.stats().snapshot();
    let figures = settle(&scenario, &confirmed, &jobs, &chunker()).await;
    figures.print(
        scenario.name,
        &format!("{} x 500, {} x 429 of {} requests", stats.errors_500, stats.throttled_429, stats.requests),
    );
    assert!(done, "{figures:?}");
    assert_nothing_lost(&figures);
    assert_eq!(figures.succeeded, 500);
    assert_eq!(figures.dead_lettered, 0, "transient faults dead-letter nothing");
    scenario.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault injection: run with scripts/chaos.sh"]
async fn a_refused_document_is_dead_then_replayed_once_the_cause_is_fixed() {
    // The provider's content policy refuses one document with 400, whichever jobs share its requests.
    let refusing =
        FakeEmbedderConfig { reject_marker: Some("QUERN-REFUSED".into()), latency_ms: 20, ..Default::default() };
    let mut scenario = Scenario::start("refused_then_replayed", refusing).await;
    let mut jobs = jobs(30, 20);
    let refused = Job::upsert("c", "refused-document", format!("{} QUERN-REFUSED {}", text(998, 100), text(999, 100)));
    jobs.insert(10, refused.clone());
    let confirmed = scenario.enqueue(&jobs).await;
    let mut worker = scenario.spawn_ready_worker("w1", &[]).await;
    let store = scenario.db.store();
    let settled_first = wait_until(Duration::from_secs(60), || async {
        store.count_finished(&confirmed).await.map(|c| c.succeeded == 30 && c.dead == 1).unwrap_or(false)
    })
    .await;
    assert!(settled_first, "the 30 other documents succeed and only the refused one is dead");
    let record = store.job(refused.job_id).await.expect("read").expect("recorded");
    assert!(record.last_error.as_deref().unwrap_or_default().contains("400"), "{:?}", record.last_error);

    // The cause is removed (the provider lifts its refusal), then the operator replays the dead letter.
    scenario.replace_embedder(FakeEmbedderConfig { latency_ms: 20, ..Default::default() }).await;
    let quern = std::path::Path::new(env!("CARGO_BIN_EXE_quern-worker")).with_file_name("quern");
    assert!(quern.exists(), "{} is missing: scripts/chaos.sh builds it", quern.display());
    let replay = tokio::process::Command::new(&quern)
        .args(["dlq", "replay", "--reason", "embedding_rejected"])
        .env("QUERN_AMQP_URL", quern_testkit::amqp_url())
        .env("QUERN_QUEUE_PREFIX", scenario.queues.topology.prefix())
        .output()
        .await
        .expect("run quern dlq replay");
    assert!(replay.status.success(), "{}", String::from_utf8_lossy(&replay.stderr));
    let replayed = wait_succeeded(&scenario, &[refused.job_id], 1, Duration::from_secs(60)).await;
    sigterm(&worker);
    assert!(exit_within(&mut worker, Duration::from_secs(40)).await.success());
    let figures = settle(&scenario, &confirmed, &jobs, &chunker()).await;
    figures.print(scenario.name, "1 document refused with 400 (content policy); refusal lifted, then replayed");
    assert!(replayed, "the replayed job succeeds: {figures:?}");
    assert_nothing_lost(&figures);
    assert_eq!(figures.succeeded, 31);
    assert_eq!(figures.dead_lettered, 0, "the dead letter left the queue when replayed");
    scenario.cleanup().await;
}

/// Bodies no worker can run: each category as a client in any language might send them.
fn malformed_bodies() -> Vec<Vec<u8>> {
    let mut bodies = Vec::new();
    let mut state: u64 = 42;
    let mut next = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) as u8
    };
    for i in 0..50 {
        bodies.push((0..(10 + i * 7)).map(|_| next()).collect()); // random bytes
    }
    for i in 0..40 {
        bodies.push(
            format!(
                "{{\"job_id\": \"{}\", \"collection\": \"c\", \"document_id\": \"d\", \"text\": \"",
                Uuid::new_v4()
            )
            .into_bytes()
            .into_iter()
            .chain([0xff, 0xfe, b'x', i as u8 | 0x80, b'"', b'}'])
            .collect(),
        ); // invalid UTF-8
    }
    for i in 0..40 {
        let wrong = [r#""collection": 7"#, r#""document_id": []"#, r#""text": {"a": 1}"#, r#""metadata": "m""#][i % 4];
        bodies.push(
            format!(
                r#"{{"job_id": "{}", "collection": "c", "document_id": "d", "text": "x", {wrong}}}"#,
                Uuid::new_v4()
            )
            .into_bytes(),
        );
    }
    for i in 0..40 {
        let missing = [
            r#"{"collection": "c", "document_id": "d", "text": "x"}"#.to_owned(),
            format!(r#"{{"job_id": "{}", "document_id": "d", "text": "x"}}"#, Uuid::new_v4()),
            format!(r#"{{"job_id": "{}", "collection": "c", "text": "x"}}"#, Uuid::new_v4()),
            format!(r#"{{"job_id": "{}", "collection": "c", "document_id": "d"}}"#, Uuid::new_v4()),
        ][i % 4]
            .clone();
        bodies.push(missing.into_bytes());
    }
    for _ in 0..27 {
        bodies.push(
            format!(
                r#"{{"job_id": "{}", "collection": "", "document_id": "d", "text": "x", "op": "merge"}}"#,
                Uuid::new_v4()
            )
            .into_bytes(),
        );
    }
    for _ in 0..3 {
        let huge = "a".repeat(50 * 1024 * 1024); // 50 MB strings
        bodies.push(
            format!(
                r#"{{"job_id": "{}", "collection": "c", "document_id": "huge", "text": "{huge}"}}"#,
                Uuid::new_v4()
            )
            .into_bytes(),
        );
    }
    assert_eq!(bodies.len(), 200);
    bodies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault injection: run with scripts/chaos.sh"]
async fn malformed_bodies_mixed_with_good_jobs() {
    let scenario = Scenario::start("malformed_mix", FakeEmbedderConfig::default()).await;
    let mut worker = scenario.spawn_worker("w1", &[]);
    let producer = scenario.producer().await;
    let (_connection, channel) = scenario.queues.raw_channel().await;
    let good = jobs(200, 40);
    let mut confirmed = Vec::new();
    for (i, body) in malformed_bodies().iter().enumerate() {
        scenario.queues.publish_raw(&channel, body).await;
        confirmed.push(producer.enqueue(&good[i]).await.expect("enqueue"));
    }
    let all = wait_succeeded(&scenario, &confirmed, 200, Duration::from_secs(120)).await;
    let queues = scenario.queues.clone();
    let all_dead = wait_until(Duration::from_secs(60), || async {
        queues.ready_count(&queues.topology.dead_queue()).await == 200
    })
    .await;
    assert!(worker.try_wait().expect("poll").is_none(), "the worker never exited or restarted");
    sigterm(&worker);
    assert!(exit_within(&mut worker, Duration::from_secs(40)).await.success());
    let figures = settle(&scenario, &confirmed, &good, &chunker()).await;
    figures
        .print(scenario.name, "200 malformed bodies (random, invalid UTF-8, wrong types, missing fields, 3 x 50 MB)");
    assert!(all && all_dead, "{figures:?}");
    assert_nothing_lost(&figures);
    assert_eq!(figures.succeeded, 200);
    assert_eq!(figures.dead_lettered + figures.dead_without_job, 200, "every bad body is dead-lettered");
    assert_eq!(figures.dead_without_reason, 0, "each with a reason: {:?}", figures.dead_reasons);
    assert_eq!(figures.dead_reasons.get("limit_message_bytes"), Some(&3), "{:?}", figures.dead_reasons);
    scenario.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault injection: run with scripts/chaos.sh"]
async fn kill_9_a_worker_ten_times_while_1000_jobs_flow() {
    let scenario = Scenario::start("kill_9", FakeEmbedderConfig { latency_ms: 150, ..Default::default() }).await;
    let jobs = jobs(1000, 80);
    let confirmed = scenario.enqueue(&jobs).await;
    // Small batches keep the flow long enough for ten kills (chunks of several jobs would otherwise share requests).
    let slow = ["--embedding-concurrency", "3", "--prefetch", "12", "--batch-size", "2"];
    let mut workers = vec![scenario.spawn_worker("w0", &slow), scenario.spawn_worker("w1", &slow)];
    let store = scenario.db.store();
    let mut kills = 0;
    for round in 0..10 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let victim = round % 2;
        workers[victim].start_kill().expect("kill -9");
        let _ = workers[victim].wait().await;
        kills += 1;
        workers[victim] = scenario.spawn_worker(&format!("w{victim}-r{round}"), &slow);
    }
    let progress_at_last_kill = store.count_finished(&confirmed).await.expect("count").succeeded;
    let done = wait_succeeded(&scenario, &confirmed, 1000, Duration::from_secs(300)).await;
    for worker in &workers {
        sigterm(worker);
    }
    for worker in &mut workers {
        assert!(exit_within(worker, Duration::from_secs(40)).await.success());
    }
    let figures = settle(&scenario, &confirmed, &jobs, &chunker()).await;
    figures.print(scenario.name, &format!("{kills} x kill -9 ({progress_at_last_kill} jobs done at the last kill)"));
    assert!(progress_at_last_kill < 1000, "the kills happened while jobs flowed");
    assert!(done, "{figures:?}");
    assert_nothing_lost(&figures);
    assert_eq!(figures.succeeded, 1000);
    scenario.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault injection: run with scripts/chaos.sh"]
async fn rabbitmq_then_postgres_restarted_mid_run() {
    // Long enough that both restarts land mid-run: `rabbitmqctl stop_app` takes seconds to cut connections, and
    // this worker (prefetch 16, 100 ms per request) does about 150 jobs a second meanwhile.
    const JOBS: u64 = 3000;
    let scenario = Scenario::start("restarts", FakeEmbedderConfig { latency_ms: 100, ..Default::default() }).await;
    let mut jobs = jobs(JOBS, 80);
    let producer = scenario.producer().await;
    let mut confirmed = producer.enqueue_many(&jobs).await.expect("enqueue");
    let mut worker = scenario.spawn_worker("w1", &["--embedding-concurrency", "4", "--prefetch", "16"]);
    assert!(wait_succeeded(&scenario, &confirmed, 100, Duration::from_secs(60)).await);
    services("restart-rabbitmq").await;
    // The producer's connection died with the broker: a call reports it or reconnects; the next one works.
    let late = Job::upsert("c", "late", text(7777, 80));
    let first_try = producer.enqueue(&late).await;
    let late_id = match first_try {
        Ok(id) => id,
        Err(error) => {
            assert!(!error.is_invalid_job(), "a broker error, not a job error: {error}");
            producer.enqueue(&late).await.expect("the next call reconnects")
        }
    };
    confirmed.push(late_id);
    jobs.push(late);
    let store = scenario.db.store();
    let at_rabbitmq = store.count_finished(&confirmed).await.expect("count").succeeded;
    assert!(
        wait_succeeded(&scenario, &confirmed, at_rabbitmq + 100, Duration::from_secs(120)).await,
        "progress after the broker restart"
    );
    services("restart-postgres").await;
    let at_postgres = scenario.db.store().count_finished(&confirmed).await.expect("count").succeeded;
    let done = wait_succeeded(&scenario, &confirmed, JOBS + 1, Duration::from_secs(240)).await;
    assert!(worker.try_wait().expect("poll").is_none(), "the worker survived both restarts");
    sigterm(&worker);
    assert!(exit_within(&mut worker, Duration::from_secs(40)).await.success());
    let figures = settle(&scenario, &confirmed, &jobs, &chunker()).await;
    figures.print(scenario.name, &format!("RabbitMQ restarted at {at_rabbitmq} jobs done, Postgres at {at_postgres}"));
    assert!(at_postgres < JOBS + 1, "the Postgres restart happened mid-run");
    assert!(done, "{figures:?}");
    assert_nothing_lost(&figures);
    assert_eq!(figures.dead_lettered, 0);
    scenario.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault injection: run with scripts/chaos.sh"]
async fn sigterm_mid_run_exits_0_and_loses_nothing() {
    let scenario = Scenario::start("sigterm", FakeEmbedderConfig { latency_ms: 100, ..Default::default() }).await;
    let jobs = jobs(300, 80);
    let confirmed = scenario.enqueue(&jobs).await;
    // A small prefetch keeps most jobs in the queue when the signal comes: at the default (256) this worker
    // would hold nearly all 300 and finish them in its drain, and the hand-over to w2 would go untested.
    let mut worker = scenario
        .spawn_worker("w1", &["--embedding-concurrency", "4", "--prefetch", "16", "--shutdown-grace-secs", "20"]);
    assert!(wait_succeeded(&scenario, &confirmed, 20, Duration::from_secs(60)).await);
    let signalled = tokio::time::Instant::now();
    sigterm(&worker);
    let status = exit_within(&mut worker, Duration::from_secs(25)).await;
    let drain = signalled.elapsed();
    let at_exit = scenario.db.store().count_finished(&confirmed).await.expect("count").succeeded;
    let mut second = scenario.spawn_ready_worker("w2", &[]).await;
    let done = wait_succeeded(&scenario, &confirmed, 300, Duration::from_secs(120)).await;
    sigterm(&second);
    assert!(exit_within(&mut second, Duration::from_secs(40)).await.success());
    let figures = settle(&scenario, &confirmed, &jobs, &chunker()).await;
    figures
        .print(scenario.name, &format!("SIGTERM at {at_exit} jobs done; exit {:?} after {drain:.1?}", status.code()));
    assert_eq!(status.code(), Some(0), "graceful exit");
    assert!(at_exit < 300, "the signal came mid-run");
    assert!(done, "{figures:?}");
    assert_nothing_lost(&figures);
    scenario.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault injection: run with scripts/chaos.sh"]
async fn a_message_that_kills_every_worker_is_dead_lettered_by_the_delivery_limit() {
    let scenario = Scenario::start("poison_abort", FakeEmbedderConfig::default()).await;
    // The worker's tests build it with the `fault-injection` feature: this text aborts the process.
    let poison = Job::upsert("c", "poison", "QUERN_FAULT_ABORT");
    let mut jobs = jobs(50, 40);
    jobs.insert(10, poison.clone());
    let confirmed = scenario.enqueue(&jobs).await;
    let queues = scenario.queues.clone();
    let mut crashes = 0;
    let mut worker = scenario.spawn_worker("w0", &["--prefetch", "1"]);
    let others: Vec<Uuid> = confirmed.iter().copied().filter(|id| *id != poison.job_id).collect();
    let store = scenario.db.store();
    // A supervisor's job: restart the worker whenever it dies, until the poison is dead and the rest done.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    let mut done = false;
    while tokio::time::Instant::now() < deadline {
        if worker.try_wait().expect("poll").is_some() {
            crashes += 1;
            worker = scenario.spawn_worker(&format!("w{crashes}"), &["--prefetch", "1"]);
        }
        let others_done = store.count_finished(&others).await.map(|c| c.succeeded == 50).unwrap_or(false);
        if others_done && queues.ready_count(&queues.topology.dead_queue()).await == 1 {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sigterm(&worker);
    assert!(exit_within(&mut worker, Duration::from_secs(40)).await.success());
    let good: Vec<Job> = jobs.iter().filter(|j| j.job_id != poison.job_id).cloned().collect();
    let figures = settle(&scenario, &confirmed, &good, &chunker()).await;
    figures.print(scenario.name, &format!("1 message aborting its worker; {crashes} worker crashes"));
    assert!(done, "the other jobs succeed: {figures:?}");
    assert_nothing_lost(&figures);
    assert_eq!(figures.dead_lettered, 1, "the broker dead-lettered the poison past its delivery limit");
    assert!(crashes >= 2, "the poison was retried before the limit: {crashes} crashes");
    scenario.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault injection: run with scripts/chaos.sh"]
async fn readiness_follows_postgres_and_the_drain() {
    let mut scenario = Scenario::start("readiness", FakeEmbedderConfig { latency_ms: 200, ..Default::default() }).await;
    let port = quern_testkit::free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut worker = scenario.spawn_worker("w1", &["--metrics-addr", &addr]);
    let readiness = |expected: u16| async move {
        wait_until(Duration::from_secs(30), || async move {
            quern_testkit::http_get(port, "/readyz").await.is_some_and(|(status, _)| status == expected)
        })
        .await
    };
    assert!(readiness(200).await, "ready once consuming with the database up");
    services("stop").await;
    let went_down = readiness(503).await;
    let body = quern_testkit::http_get(port, "/readyz").await.map(|(_, body)| body).unwrap_or_default();
    services("start").await;
    assert!(went_down, "not ready while Postgres is down");
    assert!(body.contains("\"database\":false"), "{body}");
    assert!(readiness(200).await, "ready again once Postgres is back");

    // Draining: with requests in flight (a 3 s embedder makes the drain last), /readyz answers 503 between
    // SIGTERM and exit.
    scenario.replace_embedder(FakeEmbedderConfig { latency_ms: 3000, ..Default::default() }).await;
    let jobs = jobs(40, 40);
    let confirmed = scenario.enqueue(&jobs).await;
    let embedder = scenario.embedder.stats().clone();
    let in_flight = wait_until(Duration::from_secs(30), || {
        let embedder = embedder.clone();
        async move { embedder.snapshot().in_flight > 0 }
    })
    .await;
    assert!(in_flight, "requests in flight before the signal");
    sigterm(&worker);
    let drained_unready = readiness(503).await;
    assert!(exit_within(&mut worker, Duration::from_secs(40)).await.success());
    let mut second = scenario.spawn_ready_worker("w2", &[]).await;
    let done = wait_succeeded(&scenario, &confirmed, 40, Duration::from_secs(60)).await;
    sigterm(&second);
    assert!(exit_within(&mut second, Duration::from_secs(40)).await.success());
    let figures = settle(&scenario, &confirmed, &jobs, &chunker()).await;
    figures.print(scenario.name, "Postgres stopped and started: /readyz 200 -> 503 -> 200; 503 while draining");
    assert!(drained_unready, "not ready while draining");
    assert!(done, "{figures:?}");
    assert_nothing_lost(&figures);
    scenario.cleanup().await;
}
