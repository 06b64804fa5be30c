//! `quern enqueue` riding out RabbitMQ and Postgres going away, against the real services: the binary reaches
//! each through a TCP proxy the test cuts and restores (restarting the shared services would break the tests
//! running beside these), while a worker reaches them directly.

use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use quern_testkit::fake_embedder::{self, FakeEmbedderConfig, RunningFakeEmbedder};
use quern_testkit::{TestDatabase, TestQueues, TEST_DIM};
use quern_worker::WorkerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// A TCP proxy to a real service. While cut, the connections through it are closed and new ones are closed as
/// soon as accepted, as a restarting server does; restored, it forwards again.
struct Proxy {
    port: u16,
    cut: watch::Sender<bool>,
    connections: Arc<AtomicU64>,
}

impl Proxy {
    /// Forwards 127.0.0.1:`port` to `target` (`host:port`). With `trip_after_bytes`, the proxy cuts itself once
    /// that many bytes have gone from clients to the service (to fail a publish halfway through a batch).
    async fn start(target: String, trip_after_bytes: Option<u64>) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("address").port();
        let (cut, _) = watch::channel(false);
        let connections = Arc::new(AtomicU64::new(0));
        let upstream_bytes = Arc::new(AtomicU64::new(0));
        let (accepting_cut, accepted) = (cut.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *accepting_cut.borrow() {
                    continue;
                }
                accepted.fetch_add(1, Ordering::SeqCst);
                let Ok(server) = TcpStream::connect(&target).await else { continue };
                let trip = trip_after_bytes.map(|limit| (limit, upstream_bytes.clone(), accepting_cut.clone()));
                let mut closed = accepting_cut.subscribe();
                tokio::spawn(async move {
                    tokio::select! {
                        () = forward(client, server, trip) => {}
                        _ = closed.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Proxy { port, cut, connections }
    }

    fn cut(&self) {
        self.cut.send_replace(true);
    }

    fn restore(&self) {
        self.cut.send_replace(false);
    }

    fn is_cut(&self) -> bool {
        *self.cut.borrow()
    }

    /// Connections forwarded so far.
    fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }
}

type Trip = (u64, Arc<AtomicU64>, watch::Sender<bool>);

/// Copies both ways until either side closes; with a `trip`, cuts the proxy (once: it stays restorable) when the
/// bytes sent upstream pass its limit, without forwarding the chunk that passed it.
async fn forward(client: TcpStream, server: TcpStream, trip: Option<Trip>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = async move {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let read = match client_read.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(read) => read,
            };
            if let Some((limit, sent, cut)) = &trip {
                let before = sent.fetch_add(read as u64, Ordering::SeqCst);
                if before < *limit && before + read as u64 >= *limit {
                    cut.send_replace(true);
                    return;
                }
            }
            if server_write.write_all(&buffer[..read]).await.is_err() {
                return;
            }
        }
    };
    let downstream = async move {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
    };
    tokio::select! {
        () = upstream => {}
        () = downstream => {}
    }
}

/// Where `url`'s host and port start and end.
fn host_port_span(url: &str) -> (usize, usize) {
    let authority_start = url.find("://").map(|i| i + 3).expect("a URL");
    let end = url[authority_start..].find(['/', '?']).map_or(url.len(), |i| i + authority_start);
    let start = url[authority_start..end].rfind('@').map_or(authority_start, |i| authority_start + i + 1);
    (start, end)
}

/// The `host:port` `url` names (`default_port` when it names none).
fn address_of(url: &str, default_port: u16) -> String {
    let (start, end) = host_port_span(url);
    let host_port = &url[start..end];
    if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:{default_port}")
    }
}

/// `url` with its host and port replaced by the proxy's.
fn through(proxy: &Proxy, url: &str) -> String {
    let (start, end) = host_port_span(url);
    format!("{}127.0.0.1:{}{}", &url[..start], proxy.port, &url[end..])
}

struct Env {
    db: TestDatabase,
    queues: TestQueues,
    embedder: RunningFakeEmbedder,
    corpus: std::path::PathBuf,
}

impl Env {
    /// A migrated database, queues and an embedder of the test's own, and `documents` files of about `bytes` each.
    async fn start(label: &str, documents: usize, bytes: usize) -> Env {
        quern_testkit::init_tracing();
        let corpus = std::env::temp_dir().join(quern_testkit::unique_name("quern_outage_corpus"));
        std::fs::create_dir_all(&corpus).expect("mkdir");
        for i in 0..documents {
            let sentence = format!("document {i} tells of the harbour lantern and the mill. ");
            let text = sentence.repeat(bytes / sentence.len() + 1);
            std::fs::write(corpus.join(format!("doc-{i:04}.txt")), text).expect("write");
        }
        Env {
            db: TestDatabase::create(TEST_DIM).await,
            queues: TestQueues::new(label),
            embedder: fake_embedder::spawn(FakeEmbedderConfig { dim: TEST_DIM, ..Default::default() })
                .await
                .expect("embedder"),
            corpus,
        }
    }

    /// `quern enqueue <corpus> --collection docs` and `args`, reaching the services at these URLs.
    fn enqueue(&self, amqp_url: &str, database_url: &str, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_quern"));
        command
            .arg("enqueue")
            .arg(&self.corpus)
            .args(["--collection", "docs"])
            .args(args)
            .env("QUERN_AMQP_URL", amqp_url)
            .env("QUERN_QUEUE_PREFIX", self.queues.topology.prefix())
            .env("QUERN_DATABASE_URL", database_url)
            .env_remove("QUERN_COLLECTION")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    /// An in-process worker reaching the services directly.
    fn spawn_worker(&self, shutdown: CancellationToken) -> tokio::task::JoinHandle<anyhow::Result<()>> {
        let config = WorkerConfig::try_parse_from([
            "quern-worker",
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
            "--metrics-addr",
            "off",
        ])
        .expect("worker flags");
        tokio::spawn(quern_worker::run(config, shutdown))
    }

    async fn succeeded_jobs(&self) -> i64 {
        let client = self.db.client().await;
        client.query_one("SELECT count(*) FROM quern_jobs WHERE status = 'succeeded'", &[]).await.expect("count").get(0)
    }

    async fn cleanup(self) {
        let _ = std::fs::remove_dir_all(&self.corpus);
        self.queues.delete().await;
        self.db.drop_database().await;
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn finish(child: tokio::process::Child) -> Output {
    tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("quern ends")
        .expect("wait for quern")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_wait_rides_out_the_database_going_away() {
    let env = Env::start("outagedb", 6, 1500).await;
    let proxy = Proxy::start(address_of(&env.db.url, 5432), None).await;
    let database_url = through(&proxy, &env.db.url);
    let child = env
        .enqueue(&quern_testkit::amqp_url(), &database_url, &["--wait", "--wait-timeout-secs", "120"])
        .spawn()
        .expect("spawn quern");

    // No worker yet: once the command reads the jobs' progress it finds none finished, and keeps reading.
    assert!(quern_testkit::wait_until(Duration::from_secs(30), || async { proxy.connections() > 0 }).await);
    proxy.cut();
    // The jobs are all done while the command cannot see the database.
    let shutdown = CancellationToken::new();
    let worker = env.spawn_worker(shutdown.clone());
    assert!(quern_testkit::wait_until(Duration::from_secs(60), || async { env.succeeded_jobs().await == 6 }).await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut child = child;
    assert!(child.try_wait().expect("poll quern").is_none(), "quern gave up while the database was away");
    proxy.restore();

    let output = finish(child).await;
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert!(output.status.success(), "{output:?}");
    assert!(stdout.contains("enqueued 6 documents"), "{stdout}");
    assert!(stdout.contains("6 succeeded, 0 dead"), "the final summary is kept: {stdout}");
    assert!(stderr.contains("database unavailable (") && stderr.contains("retrying"), "{stderr}");
    assert!(stderr.contains("database is back"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    shutdown.cancel();
    worker.await.expect("task").expect("worker");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_publishes_a_batch_again_with_the_same_job_ids_after_losing_the_broker() {
    // 120 documents of 2 KB in batches of 40: the proxy cuts itself once 130 KB have gone to RabbitMQ, in the
    // middle of the second batch, after the first batch was confirmed.
    let env = Env::start("outagemq", 120, 2000).await;
    let proxy = Proxy::start(address_of(&quern_testkit::amqp_url(), 5672), Some(130 * 1024)).await;
    let amqp_url = through(&proxy, &quern_testkit::amqp_url());
    let child = env
        .enqueue(&amqp_url, &env.db.url, &["--batch", "40", "--print-ids", "--wait-timeout-secs", "120"])
        .spawn()
        .expect("spawn quern");
    assert!(quern_testkit::wait_until(Duration::from_secs(30), || async { proxy.is_cut() }).await, "tripped");
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.restore();

    let output = finish(child).await;
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert!(output.status.success(), "{output:?}");
    assert!(stdout.contains("enqueued 120 documents"), "{stdout}");
    assert!(stderr.contains("RabbitMQ unavailable (") && stderr.contains("retrying"), "{stderr}");
    assert!(stderr.contains("RabbitMQ is back"), "{stderr}");
    let mut printed: Vec<uuid::Uuid> =
        stdout.lines().filter_map(|line| line.split_once('\t')).map(|(id, _)| id.parse().expect("a job id")).collect();
    printed.sort();
    printed.dedup();
    assert_eq!(printed.len(), 120, "each job printed once, when its batch was confirmed");
    let queued = env.queues.ready_count(&env.queues.topology.ingest_queue()).await;
    assert!(queued >= 120, "{queued} messages queued");
    eprintln!("{queued} messages queued for 120 jobs (the rest are the cut batch's duplicates)");

    // The duplicates carry job ids already queued: the workers store each document once, under the printed ids.
    let shutdown = CancellationToken::new();
    let worker = env.spawn_worker(shutdown.clone());
    assert!(quern_testkit::wait_until(Duration::from_secs(90), || async { env.succeeded_jobs().await == 120 }).await);
    let client = env.db.client().await;
    let mut recorded: Vec<uuid::Uuid> =
        client.query("SELECT job_id FROM quern_jobs", &[]).await.expect("jobs").iter().map(|row| row.get(0)).collect();
    recorded.sort();
    assert_eq!(recorded, printed, "no job id the command did not print");
    let documents: i64 = client.query_one("SELECT count(*) FROM quern_documents", &[]).await.expect("count").get(0);
    assert_eq!(documents, 120);
    assert_eq!(env.db.duplicate_chunk_rows().await, 0);

    shutdown.cancel();
    worker.await.expect("task").expect("worker");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_ridden_out_only_until_the_timeout_and_a_permanent_error_not_at_all() {
    const NOWHERE_AMQP: &str = "amqp://guest:guest@127.0.0.1:1/%2f";
    const NOWHERE_DATABASE: &str = "postgres://postgres@127.0.0.1:1/postgres";
    let env = Env::start("outagebound", 2, 100).await;
    let amqp = quern_testkit::amqp_url();

    let started = std::time::Instant::now();
    let output =
        finish(env.enqueue(NOWHERE_AMQP, &env.db.url, &["--wait-timeout-secs", "3"]).spawn().expect("spawn")).await;
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(stderr.contains("RabbitMQ unavailable (") && stderr.contains("retrying"), "{stderr}");
    assert!(stderr.contains("gave up after 3s") && stderr.contains("0 of 2 jobs enqueued"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());

    let args = ["--wait", "--wait-timeout-secs", "3"];
    let output = finish(env.enqueue(&amqp, NOWHERE_DATABASE, &args).spawn().expect("spawn")).await;
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    assert!(stderr.contains("database unavailable (") && stderr.contains("retrying"), "{stderr}");
    assert!(stderr.contains("gave up waiting after 3s: 0 of 2 jobs finished"), "{stderr}");

    // A database without Quern's tables: no restart will create them, so the command says so at once.
    let empty = TestDatabase::create_empty().await;
    let started = std::time::Instant::now();
    let args = ["--wait", "--wait-timeout-secs", "60"];
    let output = finish(env.enqueue(&amqp, &empty.url, &args).spawn().expect("spawn")).await;
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(stderr.contains("reading job progress") && stderr.contains("quern_jobs"), "{stderr}");
    assert!(!stderr.contains("retrying"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());

    empty.drop_database().await;
    env.cleanup().await;
}

#[test]
fn urls_are_pointed_at_the_proxy() {
    assert_eq!(address_of("postgres://postgres@127.0.0.1:5433/db?x=1", 5432), "127.0.0.1:5433");
    assert_eq!(address_of("amqp://guest:guest@localhost/%2f", 5672), "localhost:5672");
}
