//! `quern enqueue`: read documents, publish them in confirmed batches, optionally follow them to the end.
//!
//! A restart of RabbitMQ while publishing or of Postgres while waiting is ridden out: what failed is tried again
//! ([`crate::retry`]) until `--wait-timeout-secs`, and stderr says what is being waited for. Only errors their
//! adapter calls transient are retried; an invalid job or an unroutable message fails at once.
//!
//! Output is secondary here: a closed stdout (`quern enqueue --print-ids ... | head`) stops no publishing and no
//! waiting, so every document is still enqueued and the exit status still tells how the jobs ended.

use std::fmt::Display;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context};
use indicatif::{ProgressBar, ProgressStyle};
use quern_producer::{Job, Producer, ProducerConfig, ProducerError};
use quern_store::{Store, StoreError};
use secrecy::ExposeSecret;
use tokio::time::Instant;
use uuid::Uuid;

use crate::cli::EnqueueArgs;
use crate::documents;
use crate::output::{closed_is_fine, outln};
use crate::retry::{self, GaveUp};
use quern_core::{Backoff, Jitter};

/// Exit status when some jobs ended dead.
const SOME_DEAD: u8 = 2;
/// Exit status when waiting timed out.
const WAIT_TIMED_OUT: u8 = 3;
/// Between two reads of the jobs' progress.
const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Delays while a service is unavailable: a restart usually takes seconds, so no delay grows past 5 s.
const OUTAGE_BACKOFF: Backoff =
    Backoff { initial_delay: Duration::from_millis(250), max_delay: Duration::from_secs(5), jitter: Jitter::Full };

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

    let bar = progress_bar(jobs.len() as u64, "enqueue");
    let job_ids = publish(&args, &jobs, &bar).await;
    bar.finish_and_clear();
    let job_ids = job_ids?;
    let bytes: usize = jobs.iter().map(|j| j.text.len()).sum();
    closed_is_fine(outln!(
        "enqueued {} documents ({} KB) into collection `{}`{}",
        job_ids.len(),
        bytes / 1024,
        args.collection,
        if skipped.0.is_empty() { String::new() } else { format!(", skipped {}", skipped.0.len()) }
    ))?;
    if !args.wait {
        return Ok(ExitCode::SUCCESS);
    }
    wait_for_jobs(&args, &job_ids).await
}

/// Publishes `jobs` in confirmed batches (printing each batch's ids once confirmed, with `--print-ids`).
///
/// A batch that failed for a reason that can pass (connection lost, no confirm) is published again whole, with
/// the same job ids: some of its jobs may already be queued, and a worker treats a job id it finished as done,
/// so the duplicates cost a redelivery, not a second write.
async fn publish(args: &EnqueueArgs, jobs: &[Job], bar: &ProgressBar) -> anyhow::Result<Vec<Uuid>> {
    let deadline = Instant::now() + Duration::from_secs(args.wait_timeout_secs);
    let config = ProducerConfig::new(args.broker.url()?.expose_secret()).with_topology(args.broker.topology.clone());
    let mut outage = Outage::new("RabbitMQ");
    let producer = retry::until_deadline(
        deadline,
        OUTAGE_BACKOFF,
        || Producer::connect(config.clone()),
        ProducerError::class,
        |error, _| outage.retrying(bar, broker_cause(error), deadline),
    )
    .await
    .map_err(|gave_up| publish_failed(gave_up, args, 0, jobs.len()))?;
    outage.over(bar);
    let mut job_ids: Vec<Uuid> = Vec::with_capacity(jobs.len());
    for batch in jobs.chunks(args.batch as usize) {
        let ids = retry::until_deadline(
            deadline,
            OUTAGE_BACKOFF,
            || producer.enqueue_many(batch),
            ProducerError::class,
            |error, _| outage.retrying(bar, broker_cause(error), deadline),
        )
        .await
        .map_err(|gave_up| publish_failed(gave_up, args, job_ids.len(), jobs.len()))?;
        outage.over(bar);
        bar.inc(ids.len() as u64);
        if args.print_ids {
            closed_is_fine(bar.suspend(|| {
                ids.iter().zip(batch).try_for_each(|(job_id, job)| outln!("{job_id}\t{}", job.document_id))
            }))?;
        }
        job_ids.extend(ids);
    }
    Ok(job_ids)
}

/// The error of a publish that will not be retried, saying how many jobs the broker did confirm. Errors are
/// shown by their `Display` alone, which already quotes their cause (their chain would say it twice).
fn publish_failed(gave_up: GaveUp<ProducerError>, args: &EnqueueArgs, confirmed: usize, total: usize) -> anyhow::Error {
    match gave_up {
        GaveUp::Permanent(error) => anyhow!("enqueued {confirmed} of {total} jobs, then failed: {error}"),
        GaveUp::TimedOut(last) => {
            let given_up = format!(
                "gave up after {}s (--wait-timeout-secs) with {confirmed} of {total} jobs enqueued",
                args.wait_timeout_secs
            );
            match last {
                Some(error) => anyhow!("{given_up}; last error: {}", broker_cause(&error)),
                None => anyhow!("{given_up}: RabbitMQ did not answer"),
            }
        }
    }
}

/// What went wrong with the broker, without the producer's "job not enqueued" around it.
fn broker_cause(error: &ProducerError) -> &dyn Display {
    match error {
        ProducerError::Broker { source, .. } => source,
        other => other,
    }
}

/// Polls `quern_jobs` until every job has succeeded or died, drawing a progress bar.
async fn wait_for_jobs(args: &EnqueueArgs, job_ids: &[Uuid]) -> anyhow::Result<ExitCode> {
    let store = Store::connect(&args.database.store_config()?)?;
    let total = job_ids.len() as u64;
    let bar = progress_bar(total, "ingest");
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.wait_timeout_secs);
    let mut outage = Outage::new("database");
    let mut finished = 0;
    let counts = loop {
        let read = retry::until_deadline(
            deadline,
            OUTAGE_BACKOFF,
            || store.count_finished(job_ids),
            StoreError::class,
            |error, _| outage.retrying(&bar, error, deadline),
        )
        .await;
        let counts = match read {
            Ok(counts) => counts,
            Err(GaveUp::Permanent(error)) => {
                bar.abandon();
                // Display alone: it quotes the driver's message, which the error chain would repeat.
                return Err(anyhow!("reading job progress: {error}"));
            }
            Err(GaveUp::TimedOut(last)) => {
                let why = last.map(|error| format!(" (database unavailable: {error})")).unwrap_or_default();
                return Ok(timed_out(&bar, args, &format!("{finished} of {total} jobs finished{why}")));
            }
        };
        outage.over(&bar);
        finished = counts.succeeded + counts.dead;
        bar.set_position(finished);
        bar.set_message(if counts.dead > 0 { format!("{} dead", counts.dead) } else { String::new() });
        if finished >= total {
            break counts;
        }
        if Instant::now() + POLL_INTERVAL >= deadline {
            return Ok(timed_out(&bar, args, &format!("{finished} of {total} jobs finished")));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    };
    bar.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    closed_is_fine(outln!(
        "{} succeeded, {} dead, {} chunks in {elapsed:.1}s ({:.0} chunks/s)",
        counts.succeeded,
        counts.dead,
        counts.chunks,
        counts.chunks as f64 / elapsed.max(0.001)
    ))?;
    Ok(if counts.dead > 0 { ExitCode::from(SOME_DEAD) } else { ExitCode::SUCCESS })
}

fn timed_out(bar: &ProgressBar, args: &EnqueueArgs, progress: &str) -> ExitCode {
    bar.abandon();
    eprintln!("gave up waiting after {}s: {progress}", args.wait_timeout_secs);
    ExitCode::from(WAIT_TIMED_OUT)
}

/// Tells the operator what is being waited for: a line on stderr when a service becomes unavailable (again for
/// each different error) and when it is back, and the progress bar's message meanwhile. The lines matter: the
/// bar is not drawn at all when stderr is not a terminal.
#[derive(Debug)]
struct Outage {
    service: &'static str,
    reported: Option<String>,
}

impl Outage {
    fn new(service: &'static str) -> Outage {
        Outage { service, reported: None }
    }

    fn retrying(&mut self, bar: &ProgressBar, error: &dyn Display, deadline: Instant) {
        let text = format!("{} unavailable ({error}); retrying", self.service);
        if self.reported.as_deref() != Some(text.as_str()) {
            let left = deadline.saturating_duration_since(Instant::now()).as_secs();
            bar.suspend(|| eprintln!("{text} for up to {left}s (--wait-timeout-secs)"));
            self.reported = Some(text.clone());
        }
        bar.set_message(text);
    }

    fn over(&mut self, bar: &ProgressBar) {
        if self.reported.take().is_some() {
            bar.suspend(|| eprintln!("{} is back", self.service));
            bar.set_message("");
        }
    }
}

fn progress_bar(total: u64, label: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    let template = format!("{label:>8} [{{bar:40}}] {{pos}}/{{len}} jobs {{per_sec}} eta {{eta}} {{msg}}");
    bar.set_style(ProgressStyle::with_template(&template).expect("valid template").progress_chars("=> "));
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}
