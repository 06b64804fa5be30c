//! `quern dlq` against the real RabbitMQ: list, show, replay (filters, order, cap, dry run, target, rate), purge;
//! renewal under a delivery limit (RabbitMQ 4's default, recreated here with an explicit one); the queues'
//! arguments and queues declared by earlier releases. Dead letters are published straight to the dead exchange
//! with the headers a worker sets, so no worker runs.

use std::process::{Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use quern_queue::dead_letters::{DeadLetterScan, Renewal, ScanLimits, DELIVERY_COUNT, RENEW_AT};
use quern_queue::headers;
use quern_queue::lapin::message::Delivery;
use quern_queue::lapin::options::{
    BasicAckOptions, BasicGetOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use quern_queue::lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use quern_queue::lapin::types::{AMQPValue, FieldTable, LongString};
use quern_queue::lapin::{BasicProperties, Channel, Connection, ErrorKind, ExchangeKind};
use quern_queue::QueueArguments;
use quern_testkit::TestQueues;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

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
        let dlq = Dlq::connect(label).await;
        quern_queue::declare_topology(&dlq.channel, &dlq.queues.topology, QueueArguments::default())
            .await
            .expect("topology");
        dlq
    }

    /// Only the dead exchange and a dead queue declared with `dead_args` (declare_topology would refuse them).
    async fn start_with_dead_queue(label: &str, dead_args: FieldTable) -> Dlq {
        let dlq = Dlq::connect(label).await;
        let topology = &dlq.queues.topology;
        let (exchange, queue) = (topology.dead_exchange(), topology.dead_queue());
        let durable = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
        dlq.channel
            .exchange_declare(exchange.as_str().into(), ExchangeKind::Fanout, durable, FieldTable::default())
            .await
            .expect("dead exchange");
        let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
        dlq.channel.queue_declare(queue.as_str().into(), durable, dead_args).await.expect("dead queue");
        dlq.channel
            .queue_bind(
                queue.as_str().into(),
                exchange.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind");
        dlq
    }

    async fn connect(label: &str) -> Dlq {
        quern_testkit::init_tracing();
        let queues = TestQueues::new(label);
        let connection = quern_queue::connect(&quern_testkit::amqp_url(), "quern-test-dlq").await.expect("connect");
        let channel = connection.create_channel().await.expect("channel");
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

    /// `quern dlq args` against this test's queues.
    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_quern"));
        command
            .arg("dlq")
            .args(args)
            .env("QUERN_AMQP_URL", quern_testkit::amqp_url())
            .env("QUERN_QUEUE_PREFIX", self.queues.topology.prefix())
            .env("USER", "dlq-tester");
        command
    }

    async fn quern(&self, args: &[&str]) -> Output {
        self.command(args).output().await.expect("run quern")
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
async fn list_to_a_closed_stdout_ends_quietly_and_keeps_every_message() {
    // `quern dlq list | head -1`. The table is printed after the whole queue is read and released, so it must
    // overflow the pipe's buffer (64 KiB) for a write to be certain to find the reader gone: 1,000 rows of about
    // 160 bytes. `println!` panics on that write (status 101, "panicked" on stderr); `outln!` ends quietly.
    let dlq = Dlq::start("dlq_list_pipe").await;
    let letters: Vec<Letter> = (0..1000).map(|_| letter("contract")).collect();
    dlq.bury(&letters).await;

    let mut child = dlq.command(&["list"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn quern");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    stdout.read_line(&mut first).await.expect("read the first line");
    assert!(first.starts_with("ID"), "the table's header first: {first:?}");
    drop(stdout);
    let output = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("quern ends")
        .expect("wait for quern");
    let stderr = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    assert_eq!(dlq.dead_ids().await, ids(&letters), "every message still there, in order");
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

/// The arguments a quorum queue gets from RabbitMQ 4 when declared without `x-delivery-limit` (its default
/// of 20, which also reaches queues that existed before the upgrade), spelled out for a 3.x broker.
fn quorum_with_delivery_limit(limit: i32) -> FieldTable {
    let mut table = FieldTable::default();
    table.insert("x-queue-type".into(), AMQPValue::LongString(LongString::from("quorum")));
    table.insert("x-delivery-limit".into(), AMQPValue::LongInt(limit));
    table
}

fn is_precondition_failed(error: &quern_queue::lapin::Error) -> bool {
    let precondition_failed = AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED);
    matches!(error.kind(), ErrorKind::ProtocolError(e) if *e.kind() == precondition_failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_looked_at_30_times_under_a_delivery_limit_all_stay_in_order() {
    // Every look gives each message back once, and a queue with a limit of 20 drops a message given back a
    // 21st time (this queue has no dead-letter exchange): without renewal the 21st list would be the last.
    // Five messages: RabbitMQ 3.10 returns up to 32 in order on the path a delivery limit takes.
    let dlq = Dlq::start_with_dead_queue("dlq_renew", quorum_with_delivery_limit(20)).await;
    let letters: Vec<Letter> = (0..5).map(|_| letter("contract")).collect();
    dlq.bury(&letters).await;

    let mut renewals = 0;
    for look in 1..=30 {
        let output = dlq.quern(&["list", "--json"]).await;
        assert!(output.status.success(), "look {look}: {output:?}");
        let listed: Vec<String> = json(&output)
            .as_array()
            .expect("array")
            .iter()
            .map(|row| row["id"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(listed, ids(&letters), "look {look}: every message, in its place");
        renewals += stderr(&output).matches("renewed 5 dead letters").count();
    }
    assert_eq!(renewals, 2, "renewed on the looks that met a delivery count of {RENEW_AT} (11th and 22nd)");

    let shown = json(&dlq.quern(&["show", &letters[2].id, "--json"]).await);
    let count = shown["headers"][DELIVERY_COUNT].as_i64().unwrap_or(0);
    assert!(count < RENEW_AT, "x-delivery-count {count} after 30 looks");
    assert!(shown["headers"][headers::RENEWED_AT_MS].as_i64().is_some_and(|at| at > now_ms() - 60_000), "{shown}");

    let kept = dlq.drain(&dlq.queues.topology.dead_queue()).await;
    assert_eq!(kept.iter().map(message_id).collect::<Vec<_>>(), ids(&letters));
    for (delivery, original) in kept.iter().zip(&letters) {
        assert_eq!(delivery.data, original.body(), "body byte for byte");
        let table = delivery.properties.headers().as_ref();
        assert_eq!(headers::get_str(table, headers::REASON).as_deref(), Some("contract"), "Quern's headers kept");
        assert_eq!(headers::get_i64(table, headers::ATTEMPTS), Some(2));
        assert_eq!(delivery.properties.app_id().as_ref().map(|a| a.as_str()), Some("quern-producer"));
    }
    dlq.queues.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_keeps_the_order_of_what_stays_and_resets_the_count() {
    let dlq = Dlq::start("dlq_renew_lib").await;
    // More than 32: the renewal's copies are ordered by the publishing channel, not by a sort in the broker.
    let letters: Vec<Letter> = (0..40).map(|i| letter(if i % 4 == 0 { "panic" } else { "contract" })).collect();
    dlq.bury(&letters).await;
    // Two plain looks first, so the messages carry a delivery count.
    for _ in 0..2 {
        assert!(dlq.quern(&["list"]).await.status.success());
    }

    let always = ScanLimits { renew_at: 0, ..ScanLimits::default() };
    let mut scan = DeadLetterScan::open_with(&dlq.connection, &dlq.queues.topology, always).await.expect("scan");
    while let Some(letter) = scan.next().await.expect("next") {
        assert_eq!(letter.delivery_count(), 2, "{:?}", letter.message_id());
        if letter.header_str(headers::REASON).as_deref() == Some("panic") {
            scan.remove(letter.delivery_tag).await.expect("remove");
        }
    }
    let released = scan.release(&dlq.connection).await.expect("release");
    assert!(matches!(released.renewal, Renewal::Done), "{released:?}");
    assert_eq!((released.kept, released.highest_delivery_count), (30, 2));

    let kept = dlq.drain(&dlq.queues.topology.dead_queue()).await;
    let expected: Vec<String> = letters.iter().filter(|l| l.reason == "contract").map(|l| l.id.clone()).collect();
    assert_eq!(kept.iter().map(message_id).collect::<Vec<_>>(), expected, "the rest, in order, once each");
    for delivery in &kept {
        let table = delivery.properties.headers().as_ref();
        assert_eq!(headers::get_i64(table, DELIVERY_COUNT).unwrap_or(0), 0, "a fresh copy starts from 0");
    }
    dlq.queues.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scans_back_to_back_keep_the_order() {
    // The broker applies returns after answering the nack (in batches of 32 on 3.10): a scan that did not wait
    // for them would let the next one count, read and put back only the first few, behind all the others.
    let dlq = Dlq::start("dlq_back_to_back").await;
    let letters: Vec<Letter> = (0..200).map(|_| letter("contract")).collect();
    dlq.bury(&letters).await;
    for round in 0..3 {
        let mut scan = DeadLetterScan::open(&dlq.connection, &dlq.queues.topology).await.expect("scan");
        let mut read = Vec::new();
        while let Some(letter) = scan.next().await.expect("next") {
            read.push(letter.message_id().unwrap_or_default().to_owned());
        }
        scan.release(&dlq.connection).await.expect("release");
        assert_eq!(read, ids(&letters), "round {round}");
    }
    assert_eq!(dlq.dead_ids().await, ids(&letters));
    dlq.queues.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_that_cannot_happen_returns_everything() {
    // Too large to keep in memory: returned as usual, counted up by one.
    let dlq = Dlq::start("dlq_renew_large").await;
    let letters: Vec<Letter> = (0..4).map(|_| letter("contract")).collect();
    dlq.bury(&letters).await;
    let small = ScanLimits { renew_at: 0, retain_bytes: 10 };
    let mut scan = DeadLetterScan::open_with(&dlq.connection, &dlq.queues.topology, small).await.expect("scan");
    while scan.next().await.expect("next").is_some() {}
    let released = scan.release(&dlq.connection).await.expect("release");
    assert!(matches!(released.renewal, Renewal::TooLarge), "{released:?}");
    let mut scan = DeadLetterScan::open_with(&dlq.connection, &dlq.queues.topology, small).await.expect("scan");
    while let Some(letter) = scan.next().await.expect("next") {
        assert_eq!(letter.delivery_count(), 1, "returned, not renewed");
    }
    scan.release(&dlq.connection).await.expect("release");
    assert_eq!(dlq.dead_ids().await, ids(&letters));
    dlq.queues.delete().await;

    // The copies cannot be published (their connection is gone): every original is returned, in order.
    let dlq = Dlq::start("dlq_renew_failed").await;
    dlq.bury(&letters).await;
    let always = ScanLimits { renew_at: 0, ..ScanLimits::default() };
    let mut scan = DeadLetterScan::open_with(&dlq.connection, &dlq.queues.topology, always).await.expect("scan");
    while scan.next().await.expect("next").is_some() {}
    let gone = quern_queue::connect(&quern_testkit::amqp_url(), "quern-test-gone").await.expect("connect");
    gone.close(200, "gone".into()).await.expect("close");
    let released = scan.release(&gone).await.expect("release");
    assert!(matches!(released.renewal, Renewal::Failed { renewed: 0, .. }), "{released:?}");
    assert_eq!(dlq.dead_ids().await, ids(&letters), "nothing lost, nothing doubled, in order");
    dlq.queues.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queues_have_exactly_the_documented_arguments() {
    let dlq = Dlq::start("dlq_args").await;
    let topology = &dlq.queues.topology;
    let tiers = quern_testkit::TEST_RETRY_TIERS;
    quern_queue::declare_retry_queues(&dlq.channel, topology, tiers).await.expect("retry queues");
    let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };

    // The broker compares every quorum-queue argument on a redeclare: agreeing proves they are these.
    let mut expected = vec![
        (topology.dead_queue(), quern_queue::dead_queue_arguments()),
        (topology.ingest_queue(), quern_queue::ingest_queue_arguments(topology, QueueArguments::default())),
    ];
    expected.extend(tiers.iter().map(|t| (topology.retry_queue(*t), quern_queue::retry_queue_arguments(topology, *t))));
    for (queue, args) in expected {
        let channel = dlq.connection.create_channel().await.expect("channel");
        channel.queue_declare(queue.as_str().into(), durable, args).await.unwrap_or_else(|e| panic!("{queue}: {e}"));
    }

    // ... and the dead queue has no delivery limit, the ingest queue no other one than 20.
    let refused = [
        (topology.dead_queue(), quorum_with_delivery_limit(-1)),
        (topology.dead_queue(), quorum_with_delivery_limit(20)),
        (topology.ingest_queue(), quern_queue::ingest_queue_arguments(topology, QueueArguments { delivery_limit: 21 })),
    ];
    for (queue, args) in refused {
        let channel = dlq.connection.create_channel().await.expect("channel");
        let error = channel.queue_declare(queue.as_str().into(), durable, args).await.expect_err("refused");
        assert!(is_precondition_failed(&error), "{queue}: {error}");
    }
    dlq.queues.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_declared_by_earlier_releases_still_work() {
    // Written out by hand, as releases before this one declared them, so a drift in topology.rs shows here.
    let dlq = Dlq::connect("dlq_old").await;
    let topology = &dlq.queues.topology;
    let text = |v: &str| AMQPValue::LongString(LongString::from(v));
    let durable = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
    for (exchange, kind) in
        [(topology.work_exchange(), ExchangeKind::Direct), (topology.dead_exchange(), ExchangeKind::Fanout)]
    {
        dlq.channel
            .exchange_declare(exchange.as_str().into(), kind, durable, FieldTable::default())
            .await
            .expect("exchange");
    }
    let mut dead = FieldTable::default();
    dead.insert("x-queue-type".into(), text("quorum"));
    let mut ingest = FieldTable::default();
    ingest.insert("x-queue-type".into(), text("quorum"));
    ingest.insert("x-delivery-limit".into(), AMQPValue::LongInt(20));
    ingest.insert("x-dead-letter-exchange".into(), text(&topology.dead_exchange()));
    ingest.insert("x-dead-letter-strategy".into(), text("at-least-once"));
    ingest.insert("x-overflow".into(), text("reject-publish"));
    let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    for (queue, args) in [(topology.dead_queue(), dead), (topology.ingest_queue(), ingest)] {
        dlq.channel.queue_declare(queue.as_str().into(), durable, args).await.expect("old queue");
    }
    let bind = |queue: String, exchange: String, key: &'static str| {
        let channel = dlq.channel.clone();
        async move {
            channel
                .queue_bind(
                    queue.as_str().into(),
                    exchange.as_str().into(),
                    key.into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .expect("bind")
        }
    };
    bind(topology.dead_queue(), topology.dead_exchange(), "").await;
    bind(topology.ingest_queue(), topology.work_exchange(), "ingest").await;
    let old = letter("contract");
    dlq.bury(std::slice::from_ref(&old)).await;

    let channel = dlq.connection.create_channel().await.expect("channel");
    quern_queue::declare_topology(&channel, topology, QueueArguments::default()).await.expect("redeclared as before");
    let listed = json(&dlq.quern(&["list", "--json"]).await);
    assert_eq!(listed[0]["id"], old.id.as_str());
    assert_eq!(dlq.dead_ids().await, [old.id]);
    dlq.queues.delete().await;
}
