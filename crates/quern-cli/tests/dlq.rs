//! `quern dlq` against the real RabbitMQ: list, show, replay (filters, order, cap, dry run, target, rate), purge.
//! Dead letters are published straight to the dead exchange with the headers a worker sets, so no worker runs.

use std::process::Output;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use quern_queue::headers;
use quern_queue::lapin::message::Delivery;
use quern_queue::lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeclareOptions, QueueDeleteOptions};
use quern_queue::lapin::types::FieldTable;
use quern_queue::lapin::{BasicProperties, Channel, Connection};
use quern_queue::QueueArguments;
use quern_testkit::TestQueues;
use serde_json::Value;

/// One dead letter to plant: its id (message id and job id), reason, collection, age and replay count.
#[derive(Debug, Clone)]
struct Letter {
    id: String,
    reason: &'static str,
    collection: &'static str,
    dead_ago: Duration,
    replay_count: Option<i64>,
    body: Option<Vec<u8>>,
}

fn letter(reason: &'static str) -> Letter {
    Letter {
        id: uuid::Uuid::new_v4().to_string(),
        reason,
        collection: "docs",
        dead_ago: Duration::from_secs(5),
        replay_count: None,
        body: None,
    }
}

impl Letter {
    fn body(&self) -> Vec<u8> {
        self.body.clone().unwrap_or_else(|| {
            format!(
                r#"{{"job_id": "{}", "collection": "{}", "document_id": "doc-{}", "text": "héllo"}}"#,
                self.id, self.collection, self.id
            )
            .into_bytes()
        })
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_millis() as i64
}

struct Dlq {
    queues: TestQueues,
    connection: Connection,
    channel: Channel,
}

impl Dlq {
    async fn start(label: &str) -> Dlq {
        quern_testkit::init_tracing();
        let queues = TestQueues::new(label);
        let connection = quern_queue::connect(&quern_testkit::amqp_url(), "quern-test-dlq").await.expect("connect");
        let channel = connection.create_channel().await.expect("channel");
        quern_queue::declare_topology(&channel, &queues.topology, QueueArguments::default()).await.expect("topology");
        quern_queue::enable_confirms(&channel).await.expect("confirms");
        Dlq { queues, connection, channel }
    }

    /// Publishes `letters` to the dead exchange as a worker would have, in order, each confirmed.
    async fn bury(&self, letters: &[Letter]) {
        let topology = &self.queues.topology;
        for letter in letters {
            let dead_at = now_ms() - letter.dead_ago.as_millis() as i64;
            let mut table = FieldTable::default();
            headers::set_i64(&mut table, headers::CONTRACT, 1);
            headers::set_str(&mut table, headers::REASON_CLASS, "permanent");
            headers::set_str(&mut table, headers::REASON, letter.reason);
            headers::set_str(&mut table, headers::ERROR, &format!("{} went wrong\nsecond line", letter.reason));
            headers::set_i64(&mut table, headers::ATTEMPTS, 2);
            headers::set_str(&mut table, headers::WORKER_ID, "test-worker");
            headers::set_str(&mut table, headers::ORIGINAL_EXCHANGE, &topology.work_exchange());
            headers::set_str(&mut table, headers::ORIGINAL_ROUTING_KEY, topology.ingest_routing_key());
            headers::set_i64(&mut table, headers::FIRST_FAILURE_AT_MS, dead_at - 1_000);
            headers::set_i64(&mut table, headers::LAST_FAILURE_AT_MS, dead_at);
            headers::set_i64(&mut table, headers::DEAD_AT_MS, dead_at);
            if let Some(count) = letter.replay_count {
                headers::set_i64(&mut table, headers::REPLAY_COUNT, count);
            }
            let properties = BasicProperties::default()
                .with_content_type("application/json".into())
                .with_message_id(letter.id.as_str().into())
                .with_app_id("quern-producer".into())
                .with_headers(table);
            quern_queue::publish(&self.channel, &topology.dead_exchange(), "", &letter.body(), properties)
                .await
                .expect("publish")
                .wait(Duration::from_secs(10))
                .await
                .expect("confirmed");
        }
    }

    async fn quern(&self, args: &[&str]) -> Output {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_quern"))
            .arg("dlq")
            .args(args)
            .env("QUERN_AMQP_URL", quern_testkit::amqp_url())
            .env("QUERN_QUEUE_PREFIX", self.queues.topology.prefix())
            .env("USER", "dlq-tester")
            .output()
            .await
            .expect("run quern")
    }

    /// Takes every message out of `queue`, in order.
    async fn drain(&self, queue: &str) -> Vec<Delivery> {
        let channel = self.connection.create_channel().await.expect("channel");
        let mut out = Vec::new();
        while let Some(message) = channel.basic_get(queue.into(), BasicGetOptions::default()).await.expect("get") {
            message.delivery.ack(BasicAckOptions::default()).await.expect("ack");
            out.push(message.delivery);
        }
        out
    }

    async fn drain_ids(&self, queue: &str) -> Vec<String> {
        self.drain(queue).await.iter().map(message_id).collect()
    }

    async fn dead_ids(&self) -> Vec<String> {
        self.drain_ids(&self.queues.topology.dead_queue()).await
    }

    async fn ingest_ids(&self) -> Vec<String> {
        self.drain_ids(&self.queues.topology.ingest_queue()).await
    }

    async fn dead_count(&self) -> u32 {
        self.queues.ready_count(&self.queues.topology.dead_queue()).await
    }
}

fn message_id(delivery: &Delivery) -> String {
    delivery.properties.message_id().as_ref().map(|m| m.as_str().to_owned()).unwrap_or_default()
}

fn ids(letters: &[Letter]) -> Vec<String> {
    letters.iter().map(|l| l.id.clone()).collect()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(output)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_show_read_without_removing_or_reordering() {
    let dlq = Dlq::start("dlq_list").await;
    let a = letter("contract");
    let b = Letter { body: Some(vec![0xde, 0xad, 0xbe, 0xef, 0x00, 0xff]), ..letter("embedding_rejected") };
    let c = Letter { collection: "other", dead_ago: Duration::from_secs(2 * 3_600 + 30), ..letter("contract") };
    let letters = [a.clone(), b.clone(), c.clone()];
    dlq.bury(&letters).await;

    let table = dlq.quern(&["list"]).await;
    assert!(table.status.success(), "{table:?}");
    let text = stdout(&table);
    assert!(text.starts_with("ID"), "{text}");
    for l in &letters {
        assert!(text.contains(&l.id), "{text}");
    }
    assert!(text.contains("embedding_rejected") && text.contains("2h"), "{text}");

    let listed = json(&dlq.quern(&["list", "--json"]).await);
    let rows = listed.as_array().expect("array");
    assert_eq!(rows.iter().map(|r| r["id"].as_str().unwrap_or("").to_owned()).collect::<Vec<_>>(), ids(&letters));
    assert_eq!(rows[0]["job_id"], a.id.as_str());
    assert_eq!(rows[0]["collection"], "docs");
    assert_eq!(rows[0]["document_id"], format!("doc-{}", a.id));
    assert_eq!(rows[0]["reason"], "contract");
    assert_eq!(rows[0]["reason_class"], "permanent");
    assert_eq!(rows[0]["attempts"], 2);
    assert_eq!(rows[0]["replay_count"], 0);
    assert!(rows[0]["dead_at"].as_str().is_some_and(|d| d.ends_with('Z')), "{}", rows[0]);
    assert_eq!(rows[1]["collection"], Value::Null, "a malformed body has no collection");
    assert_eq!(rows[1]["body_bytes"], 6);
    assert!(rows[2]["age_secs"].as_i64().is_some_and(|s| s >= 7_200), "{}", rows[2]);

    let filtered = json(&dlq.quern(&["list", "--json", "--reason", "contract", "--collection", "other"]).await);
    assert_eq!(filtered.as_array().map(Vec::len), Some(1));

    let shown = dlq.quern(&["show", &a.id]).await;
    assert!(shown.status.success(), "{shown:?}");
    let text = stdout(&shown);
    assert!(text.contains("quern-reason: contract") && text.contains("quern-worker-id: test-worker"), "{text}");
    assert!(text.contains("héllo") && text.contains("content_type: application/json"), "{text}");
    let binary = json(&dlq.quern(&["show", &b.id, "--json"]).await);
    assert_eq!(binary["body_encoding"], "base64");
    assert_eq!(binary["body"], "3q2+7wD/");
    assert_eq!(binary["headers"][headers::REASON], "embedding_rejected");
    assert_eq!(binary["headers"][headers::ATTEMPTS], 2);
    assert_eq!(dlq.quern(&["show", "no-such-id"]).await.status.code(), Some(4));

    assert_eq!(dlq.dead_ids().await, ids(&letters), "reading changed nothing");
    dlq.queues.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_by_reason_moves_only_those_and_keeps_the_rest_in_order() {
    let dlq = Dlq::start("dlq_reason").await;
    // More than 32 held messages: a single multi-nack or a channel close would scramble them (RabbitMQ 3.10).
    let letters: Vec<Letter> =
        (0..60).map(|i| letter(if i % 3 == 0 { "embedding_rejected" } else { "contract" })).collect();
    dlq.bury(&letters).await;

    let run = dlq.quern(&["replay", "--reason", "embedding_rejected", "--json"]).await;
    assert_eq!(run.status.code(), Some(0), "{run:?}");
    let summary = json(&run);
    assert_eq!((summary["selected"].as_u64(), summary["replayed"].as_u64()), (Some(20), Some(20)), "{summary}");
    assert_eq!((summary["skipped"].as_u64(), summary["failed"].as_u64()), (Some(40), Some(0)));
    assert_eq!(summary["by_reason"]["embedding_rejected"], 20);
    let audit = stderr(&run);
    assert!(audit.contains("audit: user=dlq-tester") && audit.contains("--reason embedding_rejected"), "{audit}");

    let (chosen, others): (Vec<&Letter>, Vec<&Letter>) = letters.iter().partition(|l| l.reason == "embedding_rejected");
    let replayed = dlq.drain(&dlq.queues.topology.ingest_queue()).await;
    assert_eq!(
        replayed.iter().map(message_id).collect::<Vec<_>>(),
        chosen.iter().map(|l| l.id.clone()).collect::<Vec<_>>()
    );
    for (delivery, original) in replayed.iter().zip(&chosen) {
        assert_eq!(delivery.data, original.body(), "body byte for byte");
        let table = delivery.properties.headers().as_ref();
        assert_eq!(headers::get_i64(table, headers::REPLAY_COUNT), Some(1));
        assert!(headers::get_i64(table, headers::REPLAYED_AT_MS).is_some_and(|at| at > now_ms() - 60_000));
        for gone in headers::DEAD_LETTER_HEADERS {
            assert!(!table.is_some_and(|t| t.contains_key(gone)), "{gone} kept");
        }
        assert_eq!(headers::get_i64(table, headers::CONTRACT), Some(1), "other headers kept");
        assert_eq!(delivery.properties.delivery_mode(), &Some(2));
        assert_eq!(delivery.properties.content_type().as_ref().map(|c| c.as_str()), Some("application/json"));
    }
    assert_eq!(dlq.dead_ids().await, others.iter().map(|l| l.id.clone()).collect::<Vec<_>>(), "the rest, in order");
    dlq.queues.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replay_cap_refuses_unless_forced() {
    let dlq = Dlq::start("dlq_cap").await;
    let tired = Letter { replay_count: Some(3), ..letter("contract") };
    let fresh = Letter { replay_count: Some(1), ..letter("contract") };
    dlq.bury(&[tired.clone(), fresh.clone()]).await;

    let refused = dlq.quern(&["replay", "--all"]).await;
    assert_eq!(refused.status.code(), Some(5), "{refused:?}");
    assert!(stdout(&refused).contains("refused\t") && stdout(&refused).contains("refused 1"), "{}", stdout(&refused));
    assert_eq!(dlq.dead_count().await, 1);
    let forced = dlq.quern(&["replay", "--all", "--force"]).await;
    assert_eq!(forced.status.code(), Some(0), "{forced:?}");

    let replayed = dlq.drain(&dlq.queues.topology.ingest_queue()).await;
    let counts: Vec<(String, Option<i64>)> = replayed
        .iter()
        .map(|d| (message_id(d), headers::get_i64(d.properties.headers().as_ref(), headers::REPLAY_COUNT)))
        .collect();
    assert_eq!(counts, [(fresh.id, Some(2)), (tired.id, Some(4))]);
    assert_eq!(dlq.dead_count().await, 0);
    dlq.queues.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_runs_change_nothing() {
    let dlq = Dlq::start("dlq_dry").await;
    let letters: Vec<Letter> = (0..3).map(|_| letter("contract")).collect();
    dlq.bury(&letters).await;

    let replay = dlq.quern(&["replay", "--all", "--dry-run"]).await;
    assert_eq!(replay.status.code(), Some(0), "{replay:?}");
    assert_eq!(stdout(&replay).matches("would_replay\t").count(), 3, "{}", stdout(&replay));
    let purge = json(&dlq.quern(&["purge", "--all", "--dry-run", "--json"]).await);
    assert_eq!((purge["would_purge"].as_u64(), purge["purged"].as_u64()), (Some(3), Some(0)), "{purge}");

    assert!(dlq.ingest_ids().await.is_empty());
    assert_eq!(dlq.dead_ids().await, ids(&letters));
    dlq.queues.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn id_age_and_limit_select() {
    let dlq = Dlq::start("dlq_select").await;
    let hours = |h: u64| Duration::from_secs(h * 3_600);
    let a = Letter { dead_ago: hours(3), ..letter("contract") };
    let b = Letter { dead_ago: hours(2), ..letter("contract") };
    let c = Letter { dead_ago: Duration::from_secs(60), ..letter("contract") };
    let d = Letter { dead_ago: Duration::from_secs(10), ..letter("contract") };
    dlq.bury(&[a.clone(), b.clone(), c.clone(), d.clone()]).await;

    assert!(dlq.quern(&["replay", "--id", &b.id]).await.status.success());
    assert!(dlq.quern(&["replay", "--older-than", "1h"]).await.status.success());
    let newest = dlq.quern(&["replay", "--newer-than", "5m", "--limit", "1", "--json"]).await;
    let summary = json(&newest);
    assert_eq!((summary["selected"].as_u64(), summary["unexamined"].as_u64()), (Some(1), Some(1)), "{summary}");

    assert_eq!(dlq.ingest_ids().await, [b.id, a.id, c.id]);
    assert_eq!(dlq.dead_ids().await, [d.id]);
    dlq.queues.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn to_queue_redirects_and_a_failed_publish_leaves_the_message() {
    let dlq = Dlq::start("dlq_to").await;
    let side = format!("{}.side", dlq.queues.topology.prefix());
    let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    dlq.channel.queue_declare(side.as_str().into(), durable, FieldTable::default()).await.expect("side queue");
    let (a, b, c) = (letter("contract"), letter("contract"), letter("contract"));
    dlq.bury(&[a.clone(), b.clone(), c.clone()]).await;

    let moved = dlq.quern(&["replay", "--id", &a.id, "--to-queue", &side]).await;
    assert!(moved.status.success(), "{moved:?}");
    let missing = format!("{}.missing", dlq.queues.topology.prefix());
    let failed = dlq.quern(&["replay", "--id", &b.id, "--to-queue", &missing]).await;
    assert_eq!(failed.status.code(), Some(1), "{failed:?}");
    assert!(stderr(&failed).contains("unroutable"), "{}", stderr(&failed));

    assert_eq!(dlq.drain_ids(&side).await, [a.id]);
    assert!(dlq.ingest_ids().await.is_empty());
    assert_eq!(dlq.dead_ids().await, [b.id, c.id], "the failed one stays, in its place");
    let _ = dlq.channel.queue_delete(side.as_str().into(), QueueDeleteOptions::default()).await;
    dlq.queues.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_needs_yes_and_removes_only_the_selected() {
    let dlq = Dlq::start("dlq_purge").await;
    let letters: Vec<Letter> = (0..6).map(|i| letter(if i % 2 == 0 { "contract" } else { "panic" })).collect();
    dlq.bury(&letters).await;

    let refused = dlq.quern(&["purge", "--reason", "contract"]).await;
    assert_eq!(refused.status.code(), Some(2));
    assert!(stderr(&refused).contains("--yes"), "{}", stderr(&refused));
    assert_eq!(dlq.dead_count().await, 6);
    let purged = dlq.quern(&["purge", "--reason", "contract", "--yes"]).await;
    assert!(purged.status.success(), "{purged:?}");
    assert!(stdout(&purged).contains("purged 3"), "{}", stdout(&purged));

    let kept: Vec<String> = letters.iter().filter(|l| l.reason == "panic").map(|l| l.id.clone()).collect();
    assert_eq!(dlq.dead_ids().await, kept);
    assert!(dlq.ingest_ids().await.is_empty());
    dlq.queues.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acting_without_a_filter_is_refused() {
    let dlq = Dlq::start("dlq_nofilter").await;
    dlq.bury(&[letter("contract")]).await;
    for command in [&["replay"][..], &["purge", "--yes"][..]] {
        let output = dlq.quern(command).await;
        assert_eq!(output.status.code(), Some(2), "{output:?}");
        let text = stderr(&output);
        assert!(text.contains("--all") && text.contains("--reason") && text.contains("--older-than"), "{text}");
    }
    assert_eq!(dlq.dead_count().await, 1);
    dlq.queues.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_paces_the_publishes() {
    let dlq = Dlq::start("dlq_rate").await;
    let letters: Vec<Letter> = (0..6).map(|_| letter("contract")).collect();
    dlq.bury(&letters).await;
    let started = Instant::now();
    let run = dlq.quern(&["replay", "--all", "--rate", "20/s"]).await;
    assert!(run.status.success(), "{run:?}");
    // Six publishes at 20 per second: at least five 50 ms gaps.
    assert!(started.elapsed() >= Duration::from_millis(250), "{:?}", started.elapsed());
    assert_eq!(dlq.ingest_ids().await, ids(&letters));
    dlq.queues.delete().await;
}
