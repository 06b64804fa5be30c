//! `quern-producer-bench`: the Rust producer's publishing throughput with publisher confirms, in the three modes
//! the Python and TypeScript producers' benches measure (`scripts/producer-bench.sh` runs all three in one go):
//! awaiting each `enqueue` in turn (single), `enqueue_many` of `--batch` jobs (batched), and `--concurrency`
//! `enqueue` calls in flight on one shared producer (concurrent: many web requests at once). Publishes to a
//! throwaway queue prefix, deleted at the end; nothing consumes it.

use std::time::Instant;

use clap::Parser;
use quern_core::{Job, Topology};
use quern_producer::{Producer, ProducerConfig};
use quern_testkit::TestQueues;
use serde_json::json;

#[derive(Debug, Parser)]
#[command(name = "quern-producer-bench", about = "Jobs/s of the Rust producer with publisher confirms")]
struct Args {
    /// Jobs enqueued one at a time.
    #[arg(long, default_value_t = 2000)]
    single: usize,
    /// Jobs enqueued in batches, and again with concurrent calls.
    #[arg(long, default_value_t = 20000)]
    batched: usize,
    /// Jobs per `enqueue_many`.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// `enqueue` calls in flight at once in the concurrent mode.
    #[arg(long, default_value_t = 100)]
    concurrency: usize,
    /// Characters of text per job.
    #[arg(long, default_value_t = 1000)]
    text_chars: usize,
}

/// (jobs, seconds, jobs per second) of `jobs` jobs in `seconds`.
fn rate(jobs: usize, started: Instant) -> (usize, f64, f64) {
    let seconds = started.elapsed().as_secs_f64();
    (jobs, seconds, jobs as f64 / seconds)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.batch > 0 && args.concurrency > 0, "--batch and --concurrency must be at least 1");
    let queues = TestQueues::new("qbench_rs");
    let text: String = "lorem ipsum ".repeat(args.text_chars / 12 + 1).chars().take(args.text_chars).collect();
    let job = |i: usize| Job::upsert("bench", format!("doc-{i}"), text.clone());
    let topology: Topology = queues.topology.clone();
    let producer = Producer::connect(ProducerConfig::new(quern_testkit::amqp_url()).with_topology(topology)).await?;

    let measured = async {
        // Warm-up: the connection and the queue's first writes out of the measurement.
        producer.enqueue_many(&(0..200).map(job).collect::<Vec<_>>()).await?;

        let started = Instant::now();
        for i in 0..args.single {
            producer.enqueue(&job(i)).await?;
        }
        let single = rate(args.single, started);

        let started = Instant::now();
        let all: Vec<Job> = (0..args.batched).map(job).collect();
        for batch in all.chunks(args.batch) {
            producer.enqueue_many(batch).await?;
        }
        let batched = rate(args.batched, started);

        let started = Instant::now();
        let next = std::sync::atomic::AtomicUsize::new(0);
        let lanes = (0..args.concurrency).map(|_| async {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= args.batched {
                    return Ok::<_, quern_producer::ProducerError>(());
                }
                producer.enqueue(&job(i)).await?;
            }
        });
        for lane in futures::future::join_all(lanes).await {
            lane?;
        }
        let concurrent = rate(args.batched, started);
        anyhow::Ok((single, batched, concurrent))
    }
    .await;
    queues.delete().await;
    let (single, batched, concurrent) = measured?;

    eprintln!("quern-producer (Rust), {}-character texts, publisher confirms", args.text_chars);
    let rows = [
        ("single (await each enqueue)".to_owned(), single),
        (format!("batched (enqueue_many of {})", args.batch), batched),
        (format!("concurrent ({} enqueue calls in flight)", args.concurrency), concurrent),
    ];
    for (name, (jobs, seconds, per_second)) in &rows {
        eprintln!("{name:<44} {per_second:>8.0} jobs/s  ({jobs} jobs in {seconds:.3} s)");
    }
    let figure = |(jobs, seconds, per_second): (usize, f64, f64)| json!({"jobs": jobs, "seconds": seconds, "jobs_per_second": per_second.round()});
    println!(
        "{}",
        json!({
            "producer": "rust", "text_chars": args.text_chars, "batch": args.batch,
            "single": figure(single), "batched": figure(batched), "concurrent": figure(concurrent),
        })
    );
    Ok(())
}
