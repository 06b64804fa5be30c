//! `quern-bench`: the end-to-end throughput harness. Starts N `quern-worker` processes against the real RabbitMQ
//! and Postgres and the fake embedder at a chosen latency, enqueues M documents, waits for every commit, and
//! reports documents/s, chunks/s, enqueue-to-commit latency percentiles, peak RSS and CPU seconds per 1000
//! chunks of the worker processes alone, embedding requests and inputs per request, and efficiency against the
//! bound of the embedding pool. Run it through `scripts/bench.sh`, which starts the services and builds release
//! binaries. `--baseline celery` runs the Celery baseline on the same documents and prints the ratios.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use quern_benches::sample_document_seeded;
use quern_core::{Chunker, Job};
use quern_producer::{Producer, ProducerConfig};
use quern_store::VectorStorage;
use quern_testkit::fake_embedder::{self, FakeEmbedderConfig};
use quern_testkit::{TestDatabase, TestQueues};
use serde_json::{json, Value};
use tokio::process::{Child, Command};

/// Embedding dimension of the benchmark (a common size for small models).
const DIM: usize = 384;

#[derive(Debug, Parser)]
#[command(name = "quern-bench", about = "Quern's end-to-end throughput harness")]
struct Args {
    /// Worker processes.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Documents to ingest.
    #[arg(long, default_value_t = 1000)]
    documents: u64,
    /// Size of each document, in bytes.
    #[arg(long, default_value_t = 8000)]
    document_bytes: usize,
    /// Latency the fake embedder adds to every request, in milliseconds.
    #[arg(long, default_value_t = 100)]
    latency_ms: u64,
    /// Embedding requests in flight per worker.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Inputs per embedding request.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Prefetch per worker (the worker's default).
    #[arg(long, default_value_t = 256)]
    prefetch: usize,
    /// `segments` (the default): writes go to a hot segment without vector index, and the workers seal, index and
    /// merge segments in the background; the time until every sealed segment is indexed and no merge is due is
    /// reported, and counted in `chunks_per_second_with_index` and Postgres' CPU. `live`: the design before
    /// segments, for comparison: one HNSW index kept up to date row by row (built on the hot segment before the
    /// load, with maintenance off).
    #[arg(long, value_enum, default_value_t = VectorIndexMode::Segments)]
    vector_index: VectorIndexMode,
    /// `--vector-storage` of the workers: `vector` or `halfvec`.
    #[arg(long, default_value_t = VectorStorage::default())]
    vector_storage: VectorStorage,

    #[arg(long)]
    segment_rows: Option<u64>,
    /// Requests the fake embedder handles at once, fleet-wide; more are answered 429 at once (0 = unlimited),
    /// like a provider with a concurrency cap.
    #[arg(long, default_value_t = 0)]
    embedder_max_concurrency: usize,
    /// Run each worker with a fixed pool of `--concurrency` requests in flight (`--embedding-adaptive-concurrency
    /// false`) instead of the workers' default, an adaptive limit with `--concurrency` as its ceiling.
    #[arg(long)]
    fixed_concurrency: bool,
    /// The worker binary (a release build: scripts/bench.sh builds it).
    #[arg(long, default_value = "target/release/quern-worker")]
    worker_bin: PathBuf,
    /// Also run this baseline on the same documents and print the ratios (`celery`).
    #[arg(long)]
    baseline: Option<String>,
    /// Write the JSON report here too (default: target/bench/<time>.json).
    #[arg(long)]
    output: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum VectorIndexMode {
    Segments,
    Live,
}

struct Worker {
    child: Child,
    port: u16,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.worker_bin.exists() {
        bail!(
            "{} not found: build it with `cargo build --release -p quern-worker` (scripts/bench.sh does)",
            args.worker_bin.display()
        );
    }
    let chunker = Chunker::new(1000, 200)?;
    let jobs: Vec<Job> = (0..args.documents)
        .map(|i| Job::upsert("bench", format!("doc-{i:06}"), sample_document_seeded(args.document_bytes, i)))
        .collect();
    let chunks: usize = jobs.iter().map(|j| chunker.split(&j.text).len()).sum();
    eprintln!(
        "quern-bench: {} documents of {} bytes = {chunks} chunks; {} worker(s), latency {} ms{}{}",
        jobs.len(),
        args.document_bytes,
        args.workers,
        args.latency_ms,
        if args.embedder_max_concurrency > 0 {
            format!(", embedder takes {} at once", args.embedder_max_concurrency)
        } else {
            String::new()
        },
        if args.fixed_concurrency { ", fixed concurrency" } else { ", adaptive concurrency" },
    );

    let quern = run_quern(&args, &jobs, chunks).await?;
    let mut report = json!({ "quern": quern, "setup": setup(&args, chunks) });
    print_table("quern", &quern);
    if let Some(baseline) = &args.baseline {
        let other = run_baseline(baseline, &args, &jobs).await?;
        print_table(baseline, &other);
        let ratio = |key: &str| {
            quern[key].as_f64().zip(other[key].as_f64()).map(|(q, o)| if o > 0.0 { q / o } else { f64::NAN })
        };
        let ratios = json!({
            "documents_per_second": ratio("documents_per_second"),
            "chunks_per_second": ratio("chunks_per_second"),
            "cpu_seconds_per_1000_chunks": ratio("cpu_seconds_per_1000_chunks"),
            "peak_rss_mb_per_worker": ratio("peak_rss_mb_per_worker"),
        });
        println!("\nquern / {baseline}: {ratios}");
        report[baseline.as_str()] = other;
        report["ratios"] = ratios;
    }
    let path = args
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("target/bench/{}.json", chrono::Utc::now().format("%Y%m%dT%H%M%SZ"))));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    println!("\n{}", serde_json::to_string(&report)?);
    eprintln!("quern-bench: report written to {}", path.display());
    Ok(())
}

fn setup(args: &Args, chunks: usize) -> Value {
    json!({
        "workers": args.workers, "documents": args.documents, "document_bytes": args.document_bytes, "chunks": chunks,
        "latency_ms": args.latency_ms, "concurrency": args.concurrency, "batch_size": args.batch_size,
        "prefetch": args.prefetch, "vector_index": format!("{:?}", args.vector_index).to_lowercase(),
        "vector_storage": args.vector_storage.type_name(), "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "embedder_max_concurrency": args.embedder_max_concurrency, "adaptive": !args.fixed_concurrency,
    })
}

async fn run_quern(args: &Args, jobs: &[Job], chunks: usize) -> anyhow::Result<Value> {
    let db = TestDatabase::create_with_storage(DIM, args.vector_storage).await;
    let queues = TestQueues::new("bench");
    let embedder = fake_embedder::spawn(FakeEmbedderConfig {
        dim: DIM,
        latency_ms: args.latency_ms,
        max_concurrency: args.embedder_max_concurrency,
        ..Default::default()
    })
    .await?;

    let mut workers = Vec::new();
    let mut start_to_ready = Vec::new();
    for i in 0..args.workers {
        let port = quern_testkit::free_port();
        let spawned = Instant::now();
        let child = Command::new(&args.worker_bin)
            .args(["--amqp-url", &quern_testkit::amqp_url(), "--queue-prefix", queues.topology.prefix()])
            .args(["--database-url", &db.url, "--embedding-url", &embedder.url(), "--embedding-dim", &DIM.to_string()])
            .args([
                "--embedding-concurrency",
                &args.concurrency.to_string(),
                "--batch-size",
                &args.batch_size.to_string(),
            ])
            .args(["--prefetch", &args.prefetch.to_string(), "--metrics-addr", &format!("127.0.0.1:{port}")])
            .args(["--worker-id", &format!("bench-{i}")])
            .args(["--vector-storage", args.vector_storage.type_name()])
            .args(args.segment_rows.map(|rows| ["--segment-rows".to_owned(), rows.to_string()]).into_iter().flatten())
            .args(
                (args.vector_index == VectorIndexMode::Live)
                    .then_some(["--segment-maintenance", "false"])
                    .into_iter()
                    .flatten(),
            )
            .args(args.fixed_concurrency.then_some(["--embedding-adaptive-concurrency", "false"]).into_iter().flatten())
            .env("RUST_LOG", "warn,quern_embed::retry=error")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", args.worker_bin.display()))?;
        // Polled every 2 ms (not the test kit's 100 ms) so the figure is the worker's, not the poll's.
        loop {
            if quern_testkit::http_get(port, "/readyz").await.is_some_and(|(status, _)| status == 200) {
                break;
            }
            if spawned.elapsed() > Duration::from_secs(30) {
                bail!("worker {i} never became ready");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        start_to_ready.push(spawned.elapsed().as_secs_f64() * 1000.0);
        workers.push(Worker { child, port });
    }
    let store = db.store();
    let client = db.client().await;
    if args.vector_index == VectorIndexMode::Live {
        let opclass = args.vector_storage.cosine_opclass();
        client
            .batch_execute(&format!("CREATE INDEX ON quern_chunks_segment_2 USING hnsw (embedding {opclass})"))
            .await?;
    }
    let cpu_before: f64 = workers.iter().map(|w| cpu_seconds(w.child.id())).sum();
    let postgres_before = processes_cpu_seconds("postgres");
    let broker_before = processes_cpu_seconds("beam.smp");

    let producer =
        Producer::connect(ProducerConfig::new(quern_testkit::amqp_url()).with_topology(queues.topology.clone()))
            .await?;
    let started = Instant::now();
    let mut ids = Vec::with_capacity(jobs.len());
    for batch in jobs.chunks(500) {
        ids.extend(producer.enqueue_many(batch).await?);
    }
    let enqueue_seconds = started.elapsed().as_secs_f64();
    let done = quern_testkit::wait_until(Duration::from_secs(1800), || async {
        store.count_finished(&ids).await.map(|c| c.succeeded as usize == ids.len()).unwrap_or(false)
    })
    .await;
    let wall = started.elapsed().as_secs_f64();
    if !done {
        bail!("not every job succeeded within 30 minutes");
    }
    let cpu = workers.iter().map(|w| cpu_seconds(w.child.id())).sum::<f64>() - cpu_before;
    let postgres_ingest_cpu = processes_cpu_seconds("postgres") - postgres_before;
    let rss: Vec<f64> = workers.iter().map(|w| peak_rss_mb(w.child.id())).collect();
    let index_build_seconds = match args.vector_index {
        VectorIndexMode::Live => None,
        VectorIndexMode::Segments => Some(wait_for_maintenance(&client).await?),
    };
    let postgres_cpu = processes_cpu_seconds("postgres") - postgres_before;
    let broker_cpu = processes_cpu_seconds("beam.smp") - broker_before;
    let segments: Vec<Value> = client
        .query("SELECT segment, state, row_count FROM quern_segments ORDER BY segment", &[])
        .await?
        .iter()
        .map(|row| json!({"id": row.get::<_, i64>(0), "state": row.get::<_, String>(1), "rows": row.get::<_, Option<i64>>(2)}))
        .collect();
    let scraped = quern_testkit::http_get(workers[0].port, "/metrics").await.map(|(_, body)| body).unwrap_or_default();
    let latencies = latencies_ms(&db, &ids).await?;
    for worker in &workers {
        if let Some(pid) = worker.child.id() {
            let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        }
    }
    for worker in &mut workers {
        let _ = tokio::time::timeout(Duration::from_secs(30), worker.child.wait()).await;
    }
    let stats = embedder.stats().snapshot();
    let chunks_per_second = chunks as f64 / wall;
    // Requests in flight are capped by the pools, and by the embedder when it takes fewer at once.
    let in_flight = match args.embedder_max_concurrency {
        0 => args.workers * args.concurrency,
        cap => cap.min(args.workers * args.concurrency),
    };
    let bound = (args.latency_ms > 0).then(|| (in_flight * args.batch_size) as f64 / (args.latency_ms as f64 / 1000.0));
    queues.delete().await;
    db.drop_database().await;
    let metric_mean = |name: &str, label: &str| -> Option<f64> {
        let value = |suffix: &str| {
            scraped
                .lines()
                .find(|l| l.starts_with(&format!("{name}_{suffix}{{{label}}}")))
                .and_then(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        };
        Some(value("sum")? / value("count")?)
    };
    Ok(json!({
        "impl": "quern",
        "documents": ids.len(),
        "chunks": chunks,
        "wall_seconds": wall,
        "enqueue_seconds": enqueue_seconds,
        "documents_per_second": ids.len() as f64 / wall,
        "chunks_per_second": chunks_per_second,
        "vector_index": format!("{:?}", args.vector_index).to_lowercase(),
        "index_build_seconds": index_build_seconds,
        "chunks_per_second_with_index": chunks as f64 / (wall + index_build_seconds.unwrap_or(0.0)),
        "latency_ms": { "p50": percentile(&latencies, 0.50), "p95": percentile(&latencies, 0.95), "p99": percentile(&latencies, 0.99) },
        "peak_rss_mb_per_worker": rss.iter().copied().fold(0.0, f64::max),
        "peak_rss_mb_total": rss.iter().sum::<f64>(),
        "cpu_seconds": cpu,
        "cpu_seconds_per_1000_chunks": cpu / chunks as f64 * 1000.0,
        "embedding_requests": stats.requests,
        "embedding_429s": stats.throttled_429,
        "embedder_peak_in_flight": stats.max_in_flight,
        // The adaptive limit where the run left it (the pool size when fixed).
        "concurrency_limit_first_worker": scraped
            .lines()
            .find_map(|l| l.strip_prefix("quern_embedding_concurrency_limit "))
            .and_then(|v| v.trim().parse::<f64>().ok()),
        "mean_inputs_per_request": if stats.requests > 0 { stats.inputs as f64 / stats.requests as f64 } else { 0.0 },
        "efficiency": bound.map(|b| chunks_per_second / b),
        "bound_chunks_per_second": bound,
        "start_to_ready_ms": start_to_ready,
        // Where the time goes (first worker's /metrics; Postgres's CPU from /proc over the run):
        "mean_write_transaction_seconds": metric_mean("quern_db_write_duration_seconds", "op=\"upsert\""),
        "mean_embedding_request_seconds": metric_mean("quern_embedding_request_duration_seconds", "outcome=\"ok\""),
        // Ingest alone, then everything including the background builds and merges that followed.
        "postgres_ingest_cpu_seconds": postgres_ingest_cpu,
        "postgres_cores_busy": postgres_ingest_cpu / wall,
        "postgres_cpu_seconds": postgres_cpu,
        "postgres_cpu_seconds_per_1000_chunks": postgres_cpu / chunks as f64 * 1000.0,
        "broker_cpu_seconds": broker_cpu,
        "segments": segments,
    }))
}

/// Enqueue (the time in each UUIDv7 job id) to commit (the job row's last update), in milliseconds, sorted.
async fn latencies_ms(db: &TestDatabase, ids: &[uuid::Uuid]) -> anyhow::Result<Vec<f64>> {
    let client = db.client().await;
    let rows = client.query("SELECT job_id, updated_at FROM quern_jobs WHERE job_id = ANY($1)", &[&ids]).await?;
    let mut latencies: Vec<f64> = rows
        .iter()
        .filter_map(|row| {
            let id: uuid::Uuid = row.get(0);
            let committed: chrono::DateTime<chrono::Utc> = row.get(1);
            let (secs, nanos) = id.get_timestamp()?.to_unix();
            let enqueued_ms = secs as f64 * 1000.0 + f64::from(nanos) / 1e6;
            Some(committed.timestamp_micros() as f64 / 1000.0 - enqueued_ms)
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    Ok(latencies)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// User + system CPU seconds of a process, from /proc (clock ticks of 1/100 s, as on every Linux here).
fn cpu_seconds(pid: Option<u32>) -> f64 {
    stat_ticks(pid, &[11, 12]) / 100.0
}

/// The sum of the given fields of `/proc/<pid>/stat`, counted after the command name (which may hold spaces, so the
/// split is after its closing parenthesis): 1 is the parent pid, 11 and 12 user and system ticks, 13 and 14 those of
/// the children that exited.
fn stat_ticks(pid: Option<u32>, indexes: &[usize]) -> f64 {
    let Some(stat) = pid.and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()) else { return 0.0 };
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    indexes.iter().map(|&i| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0)).sum()
}

/// CPU seconds of every process named `name` (e.g. all Postgres backends), from /proc, plus those of their children
/// that exited (a parallel index build's workers, closed connections' backends), which the parent that reaped them
/// (the postmaster) carries.
fn processes_cpu_seconds(name: &str) -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0.0 };
    let named = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim() == name);
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| named(pid))
        .map(|pid| {
            let own = stat_ticks(Some(pid), &[11, 12]);
            let parent = stat_ticks(Some(pid), &[1]) as u32;
            let reaped = if named(parent) { 0.0 } else { stat_ticks(Some(pid), &[13, 14]) };
            (own + reaped) / 100.0
        })
        .sum()
}

/// Peak resident memory (VmHWM) of a process, in MB.
fn peak_rss_mb(pid: Option<u32>) -> f64 {
    let Some(status) = pid.and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok()) else {
        return 0.0;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

async fn run_baseline(name: &str, args: &Args, jobs: &[Job]) -> anyhow::Result<Value> {
    if name != "celery" {
        bail!("unknown baseline `{name}` (celery)");
    }
    let dir = PathBuf::from("target/bench");
    std::fs::create_dir_all(&dir)?;
    let documents = dir.join("documents.jsonl");
    let lines: Vec<String> = jobs
        .iter()
        .map(|j| json!({"collection": j.collection, "document_id": j.document_id, "text": j.text}).to_string())
        .collect();
    std::fs::write(&documents, lines.join("\n") + "\n")?;
    let db = TestDatabase::create_empty().await;
    let embedder =
        fake_embedder::spawn(FakeEmbedderConfig { dim: DIM, latency_ms: args.latency_ms, ..Default::default() })
            .await?;
    let queue = quern_testkit::unique_name("celery_bench");
    let output = Command::new("bash")
        .arg("benches/baselines/celery/run.sh")
        .args(["--documents", &documents.to_string_lossy(), "--amqp-url", &quern_testkit::amqp_url()])
        .args(["--database-url", &db.url, "--embedding-url", &embedder.url(), "--embedding-dim", &DIM.to_string()])
        .args(["--workers", &args.workers.to_string(), "--concurrency", &args.concurrency.to_string()])
        .args(["--batch-size", &args.batch_size.to_string(), "--chunk-size", "1000", "--chunk-overlap", "200"])
        .args(["--queue-name", &queue])
        .stderr(Stdio::inherit())
        .output()
        .await
        .context("running the Celery baseline")?;
    db.drop_database().await;
    if !output.status.success() {
        bail!("the {name} baseline failed ({})", output.status);
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let last = text.lines().rev().find(|l| l.trim_start().starts_with('{')).context("the baseline printed no JSON")?;
    Ok(serde_json::from_str(last)?)
}

fn print_table(name: &str, r: &Value) {
    let f = |key: &str| r[key].as_f64().map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"));
    println!("\n{name}");
    println!("  documents/s                 {}", f("documents_per_second"));
    println!("  chunks/s                    {}", f("chunks_per_second"));
    if !r["index_build_seconds"].is_null() {
        println!("  maintenance idle after (s)  {}", f("index_build_seconds"));
        println!("  chunks/s incl. maintenance  {}", f("chunks_per_second_with_index"));
    }
    if !r["postgres_cpu_seconds_per_1000_chunks"].is_null() {
        println!("  Postgres CPU s/1000 chunks  {}", f("postgres_cpu_seconds_per_1000_chunks"));
        println!("  Postgres cores (ingest)     {}", f("postgres_cores_busy"));
        println!("  Postgres CPU s (all)        {}", f("postgres_cpu_seconds"));
        println!("  broker CPU s                {}", f("broker_cpu_seconds"));
    }
    println!(
        "  latency p50/p95/p99 (ms)    {:.0} / {:.0} / {:.0}",
        r["latency_ms"]["p50"].as_f64().unwrap_or(f64::NAN),
        r["latency_ms"]["p95"].as_f64().unwrap_or(f64::NAN),
        r["latency_ms"]["p99"].as_f64().unwrap_or(f64::NAN)
    );
    println!("  peak RSS per worker (MB)    {}", f("peak_rss_mb_per_worker"));
    println!("  CPU s per 1000 chunks       {}", f("cpu_seconds_per_1000_chunks"));
    println!("  embedding requests          {}", r["embedding_requests"]);
    if !r["embedding_429s"].is_null() {
        println!("  embedder 429s               {}", r["embedding_429s"]);
        println!("  concurrency limit at end    {}", r["concurrency_limit_first_worker"]);
    }
    println!("  mean inputs per request     {}", f("mean_inputs_per_request"));
    println!("  efficiency vs bound         {}", f("efficiency"));
    println!("  mean write transaction (s)  {}", f("mean_write_transaction_seconds"));
    println!("  mean embedding request (s)  {}", f("mean_embedding_request_seconds"));
    println!("  Postgres cores busy         {}", f("postgres_cores_busy"));
    if let Some(ready) = r["start_to_ready_ms"].as_array() {
        println!("  start to ready (ms)         {ready:?}");
    }
}

/// Waits until the workers' maintenance is idle: no segment sealed and waiting for its index, no merge in progress,
/// and nothing changing for 3 s (the maintainer looks every second). Reads only `quern_segments`, so the wait
/// adds no work to Postgres. Returns the seconds waited.
async fn wait_for_maintenance(client: &tokio_postgres::Client) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut last = String::new();
    let mut unchanged_since = Instant::now();
    loop {
        let state: String = client
            .query_one(
                "SELECT coalesce(string_agg(segment || ':' || state, ',' ORDER BY segment), '') FROM quern_segments",
                &[],
            )
            .await?
            .get(0);
        let busy = state.contains(":sealed") || state.contains(":merging");
        if state != last {
            last = state;
            unchanged_since = Instant::now();
        } else if !busy && unchanged_since.elapsed() >= Duration::from_secs(3) {
            return Ok((unchanged_since - started).as_secs_f64());
        }
        if started.elapsed() > Duration::from_secs(3600) {
            bail!("segment maintenance still busy after an hour: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
