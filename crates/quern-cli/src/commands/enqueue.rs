//! `quern enqueue`: read documents, publish them in confirmed batches, optionally follow them to the end.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use quern_producer::{Job, Producer, ProducerConfig};
use quern_store::Store;
use secrecy::ExposeSecret;
use uuid::Uuid;

use crate::cli::EnqueueArgs;
use crate::documents;

/// Exit status when some jobs ended dead.
const SOME_DEAD: u8 = 2;
/// Exit status when waiting timed out.
const WAIT_TIMED_OUT: u8 = 3;

pub async fn run(args: EnqueueArgs) -> anyhow::Result<ExitCode> {
    let (docs, skipped) = documents::collect(&args.paths, args.document_id.as_deref(), &args.extensions)?;
    for (path, why) in &skipped.0 {
        eprintln!("skipping {}: {why}", path.display());
    }
    if docs.is_empty() {
        anyhow::bail!("no documents found in {:?}", args.paths);
    }
    let jobs: Vec<Job> = docs.into_iter().map(|d| Job::upsert(&args.collection, d.document_id, d.text)).collect();
    for job in &jobs {
        job.validate().with_context(|| format!("document `{}`", job.document_id))?;
    }

    let config = ProducerConfig::new(args.broker.amqp_url.expose_secret()).with_topology(args.broker.topology.clone());
    let producer = Producer::connect(config).await?;
    let bar = progress_bar(jobs.len() as u64, "enqueue");
    let mut job_ids: Vec<Uuid> = Vec::with_capacity(jobs.len());
    for batch in jobs.chunks(args.batch as usize) {
        let ids = producer.enqueue_many(batch).await?;
        bar.inc(ids.len() as u64);
        job_ids.extend(ids);
    }
    bar.finish_and_clear();
    if args.print_ids {
        for (job_id, job) in job_ids.iter().zip(&jobs) {
            println!("{job_id}\t{}", job.document_id);
        }
    }
    let bytes: usize = jobs.iter().map(|j| j.text.len()).sum();
    println!(
        "enqueued {} documents ({} KB) into collection `{}`{}",
        job_ids.len(),
        bytes / 1024,
        args.collection,
        if skipped.0.is_empty() { String::new() } else { format!(", skipped {}", skipped.0.len()) }
    );
    if !args.wait {
        return Ok(ExitCode::SUCCESS);
    }
    wait_for_jobs(&args, &job_ids).await
}

/// Polls `quern_jobs` until every job has succeeded or died, drawing a progress bar.
async fn wait_for_jobs(args: &EnqueueArgs, job_ids: &[Uuid]) -> anyhow::Result<ExitCode> {
    let store = Store::connect(&args.database.store_config())?;
    let total = job_ids.len() as u64;
    let bar = progress_bar(total, "ingest");
    let started = tokio::time::Instant::now();
    let deadline = started + Duration::from_secs(args.wait_timeout_secs);
    let counts = loop {
        let counts = store.count_finished(job_ids).await.context("reading job progress")?;
        bar.set_position(counts.succeeded + counts.dead);
        bar.set_message(if counts.dead > 0 { format!("{} dead", counts.dead) } else { String::new() });
        if counts.succeeded + counts.dead >= total {
            break counts;
        }
        if tokio::time::Instant::now() >= deadline {
            bar.abandon();
            eprintln!(
                "gave up waiting after {}s: {} of {total} jobs finished",
                args.wait_timeout_secs,
                counts.succeeded + counts.dead
            );
            return Ok(ExitCode::from(WAIT_TIMED_OUT));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    bar.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{} succeeded, {} dead, {} chunks in {elapsed:.1}s ({:.0} chunks/s)",
        counts.succeeded,
        counts.dead,
        counts.chunks,
        counts.chunks as f64 / elapsed.max(0.001)
    );
    Ok(if counts.dead > 0 { ExitCode::from(SOME_DEAD) } else { ExitCode::SUCCESS })
}

fn progress_bar(total: u64, label: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    let template = format!("{label:>8} [{{bar:40}}] {{pos}}/{{len}} jobs {{per_sec}} eta {{eta}} {{msg}}");
    bar.set_style(ProgressStyle::with_template(&template).expect("valid template").progress_chars("=> "));
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}
