//! `quern status <job_id>`: one job's fate. `quern status`: an overview for operators of one queue prefix (the
//! same `--queue-prefix` scopes both halves, since several prefixes may share a broker and a database): each
//! queue's depth and consumers, and the prefix's recent jobs by status with the commonest reasons they died; then
//! what retention pruned (the whole database's: the last run and the last day's totals).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::anyhow;
use quern_config::{BrokerArgs, DatabaseArgs};
use quern_core::Topology;
use quern_queue::depth::{queue_depths, QueueDepth};
use quern_store::{JobOverview, PruneHistory, Store};
use secrecy::ExposeSecret;
use serde_json::{json, Value};

use crate::output::{self, outln};

/// Exit status when no worker has recorded the job (yet).
const UNKNOWN_JOB: u8 = 4;
/// Exit status of a flag that cannot be understood.
const USAGE: u8 = 2;
/// Longest wait for RabbitMQ to connect and answer every passive declare.
const BROKER_TIMEOUT: Duration = Duration::from_secs(15);

pub async fn run(
    broker: &BrokerArgs,
    database: &DatabaseArgs,
    job_id: Option<uuid::Uuid>,
    as_json: bool,
    window: &str,
    retry_tiers: &str,
) -> anyhow::Result<ExitCode> {
    match job_id {
        Some(job_id) => job(database, job_id, as_json).await,
        None => overview(broker, database, as_json, window, retry_tiers).await,
    }
}

async fn job(database: &DatabaseArgs, job_id: uuid::Uuid, as_json: bool) -> anyhow::Result<ExitCode> {
    let store = Store::connect(&database.store_config()?)?;
    let Some(job) = store.job(job_id).await? else {
        if as_json {
            outln!("{}", json!({"job_id": job_id, "status": null}))?;
        } else {
            outln!("job {job_id}: unknown (no worker has picked it up yet, or it never reached the queue)")?;
        }
        return Ok(ExitCode::from(UNKNOWN_JOB));
    };
    if as_json {
        let value = json!({
            "job_id": job.job_id,
            "status": job.status.as_str(),
            "collection": job.collection,
            "document_id": job.document_id,
            "op": job.op,
            "queue_prefix": job.queue_prefix,
            "attempts": job.attempts,
            "chunk_count": job.chunk_count,
            "last_error": job.last_error,
            "created_at": job.created_at.to_rfc3339(),
            "updated_at": job.updated_at.to_rfc3339(),
        });
        outln!("{value}")?;
    } else {
        outln!("job         {}", job.job_id)?;
        outln!("status      {}", job.status.as_str())?;
        outln!(
            "document    {} / {}",
            job.collection.as_deref().unwrap_or("?"),
            job.document_id.as_deref().unwrap_or("?")
        )?;
        outln!("op          {}", job.op.as_deref().unwrap_or("?"))?;
        if let Some(prefix) = &job.queue_prefix {
            outln!("prefix      {prefix}")?;
        }
        outln!("attempts    {}", job.attempts)?;
        if let Some(chunks) = job.chunk_count {
            outln!("chunks      {chunks}")?;
        }
        if let Some(error) = &job.last_error {
            outln!("last error  {error}")?;
        }
        outln!("updated     {}", job.updated_at.to_rfc3339())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads the broker and the database at once, both scoped to `--queue-prefix`; prints whatever part answered and
/// exits 1 if either did not.
async fn overview(
    broker: &BrokerArgs,
    database: &DatabaseArgs,
    as_json: bool,
    window_text: &str,
    retry_tiers: &str,
) -> anyhow::Result<ExitCode> {
    let window = match parse_durations(window_text).as_deref() {
        Ok([window]) => *window,
        Ok(_) => return Ok(usage(&format!("--window `{window_text}`: give one duration, e.g. 1h"))),
        Err(error) => return Ok(usage(&format!("--window: {error}"))),
    };
    let tiers = match parse_durations(retry_tiers) {
        Ok(tiers) => tiers,
        Err(error) => return Ok(usage(&format!("--retry-tiers: {error}"))),
    };
    let prefix = broker.topology.prefix();
    let names = queue_names(&broker.topology, &tiers);
    let (queues, jobs) = tokio::join!(read_queues(broker, &names), read_jobs(database, window, prefix));

    let (shown_queues, shown_jobs) = (queues.as_deref().ok(), jobs.as_ref().ok().map(|(jobs, _)| jobs));
    let pruning = jobs.as_ref().ok().and_then(|(_, pruning)| pruning.as_ref());
    let printed = if as_json {
        outln!("{}", overview_json(prefix, shown_queues, shown_jobs, pruning))
    } else {
        print_overview(prefix, shown_queues, shown_jobs, pruning, window_text.trim())
    };
    // A reader that went away (`quern status | head`) has what it wanted; the failures below and the exit status
    // still say which half did not answer.
    output::closed_is_fine(printed)?;
    let mut failed = false;
    if let Err(error) = &queues {
        eprintln!("quern status: queues: {error:#}");
        failed = true;
    }
    if let Err(error) = &jobs {
        eprintln!("quern status: jobs: {error:#}");
        failed = true;
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn usage(message: &str) -> ExitCode {
    eprintln!("quern status: {message}");
    ExitCode::from(USAGE)
}

/// Parses comma-separated durations exactly as `quern-worker --retry-tiers` does, with the worker's own flag
/// definition (humantime: `500ms`, `10s`, `5m`, `1h30m`), so the delay queues named here are the worker's to
/// the letter.
pub(crate) fn parse_durations(text: &str) -> Result<Vec<Duration>, String> {
    text.split(',').map(quern_config::parse_duration).collect()
}

/// The work queue, one delay queue per distinct tier, then the dead-letter queue.
pub(crate) fn queue_names(topology: &Topology, tiers: &[Duration]) -> Vec<String> {
    let mut names = vec![topology.ingest_queue()];
    for tier in tiers {
        let name = topology.retry_queue(*tier);
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names.push(topology.dead_queue());
    names
}

/// Each named queue's depth and consumers, on a connection of its own, bounded by [`BROKER_TIMEOUT`] (the console's
/// overview reads them the same way).
pub(crate) async fn read_queues(broker: &BrokerArgs, names: &[String]) -> anyhow::Result<Vec<QueueDepth>> {
    let read = async {
        let connection = quern_queue::connect(broker.url()?.expose_secret(), "quern status").await?;
        let depths = queue_depths(&connection, names).await;
        let _ = connection.close(200, "status read".into()).await;
        Ok(depths?)
    };
    tokio::time::timeout(BROKER_TIMEOUT, read)
        .await
        .map_err(|_| anyhow!("RabbitMQ did not answer within {} s", BROKER_TIMEOUT.as_secs()))?
}

/// The prefix's recent jobs, and what retention pruned (database-wide; `None` before migration 6).
async fn read_jobs(
    database: &DatabaseArgs,
    window: Duration,
    prefix: &str,
) -> anyhow::Result<(JobOverview, Option<PruneHistory>)> {
    let store = Store::connect(&database.store_config()?)?;
    let (jobs, pruning) = tokio::join!(store.job_overview(window, prefix), store.prune_history());
    Ok((jobs?, pruning?))
}

fn overview_json(
    prefix: &str,
    queues: Option<&[QueueDepth]>,
    jobs: Option<&JobOverview>,
    pruning: Option<&PruneHistory>,
) -> Value {
    let queues = queues.map(|queues| {
        queues
            .iter()
            .map(|queue| json!({"name": queue.name, "messages": queue.messages, "consumers": queue.consumers}))
            .collect::<Vec<_>>()
    });
    let dead_reasons = jobs.map(|jobs| {
        jobs.dead_reasons.iter().map(|reason| json!({"error": reason.error, "count": reason.count})).collect::<Vec<_>>()
    });
    let jobs = jobs.map(|jobs| {
        json!({
            "window_secs": jobs.window.as_secs(),
            "queued": jobs.queued,
            "running": jobs.running,
            "succeeded": jobs.succeeded,
            "failed": jobs.failed,
            "dead": jobs.dead,
            "without_prefix": jobs.without_prefix,
        })
    });
    let pruning = pruning.map(|pruning| {
        let last = pruning.last.as_ref().map(|run| {
            json!({
                "pruned_by": run.pruned_by,
                "started_at": run.started_at.to_rfc3339(),
                "finished_at": run.finished_at.to_rfc3339(),
                "jobs": run.jobs,
                "tombstones": run.tombstones,
                "error": run.error,
            })
        });
        json!({
            "last_run": last,
            "last_day": {
                "runs": pruning.runs_last_day,
                "jobs": pruning.jobs_last_day,
                "tombstones": pruning.tombstones_last_day,
            },
            "tombstones_pruned_through": pruning.tombstones_pruned_through.map(|at| at.to_rfc3339()),
        })
    });
    json!({"queue_prefix": prefix, "queues": queues, "jobs": jobs, "dead_reasons": dead_reasons, "pruning": pruning})
}

fn print_overview(
    prefix: &str,
    queues: Option<&[QueueDepth]>,
    jobs: Option<&JobOverview>,
    pruning: Option<&PruneHistory>,
    window: &str,
) -> anyhow::Result<()> {
    outln!("queues and jobs of prefix `{prefix}` (--queue-prefix)")?;
    if let Some(queues) = queues {
        outln!()?;
        print_queues(queues)?;
    }
    if let Some(jobs) = jobs {
        outln!()?;
        print_jobs(jobs, window)?;
    }
    if let Some(pruning) = pruning {
        outln!()?;
        print_pruning(pruning)?;
    }
    Ok(())
}

/// What retention pruned, for the whole database (every prefix sharing it).
fn print_pruning(pruning: &PruneHistory) -> anyhow::Result<()> {
    outln!("retention (the whole database)")?;
    let Some(last) = &pruning.last else {
        outln!("  no prune run yet (workers prune every --prune-every under their lease; or run `quern prune`)")?;
        return Ok(());
    };
    let ago = (chrono::Utc::now() - last.finished_at).to_std().unwrap_or_default();
    let ago = humantime::format_duration(Duration::from_secs(ago.as_secs()));
    outln!(
        "  last run    {} ({ago} ago, by {}): {} finished jobs, {} tombstones",
        last.finished_at.to_rfc3339(),
        last.pruned_by,
        last.jobs,
        last.tombstones
    )?;
    if let Some(error) = &last.error {
        outln!("  it stopped  {error}")?;
    }
    outln!(
        "  last day    {} runs: {} finished jobs, {} tombstones",
        pruning.runs_last_day,
        pruning.jobs_last_day,
        pruning.tombstones_last_day
    )?;
    if let Some(through) = pruning.tombstones_pruned_through {
        outln!("  stale jobs  created before {} with no document version are dead-lettered", through.to_rfc3339())?;
    }
    Ok(())
}

fn print_queues(queues: &[QueueDepth]) -> anyhow::Result<()> {
    let width = queues.iter().map(|queue| queue.name.len()).chain(["queue".len()]).max().unwrap_or(0);
    outln!("{:<width$}  {:>9}  {:>9}", "queue", "ready", "consumers")?;
    for queue in queues {
        match (queue.messages, queue.consumers) {
            (Some(messages), Some(consumers)) => outln!("{:<width$}  {messages:>9}  {consumers:>9}", queue.name)?,
            _ => outln!("{:<width$}  {:>9}", queue.name, "missing")?,
        }
    }
    Ok(())
}

fn print_jobs(jobs: &JobOverview, window: &str) -> anyhow::Result<()> {
    outln!("jobs updated in the last {window}")?;
    for (status, count) in [
        ("queued", jobs.queued),
        ("running", jobs.running),
        ("succeeded", jobs.succeeded),
        ("failed", jobs.failed),
        ("dead", jobs.dead),
    ] {
        outln!("  {status:<10} {count:>9}")?;
    }
    if jobs.without_prefix > 0 {
        outln!(
            "  + {} jobs without a prefix (written by workers from before migration 0003), not counted above",
            jobs.without_prefix
        )?;
    }
    if !jobs.dead_reasons.is_empty() {
        outln!()?;
        outln!("why they died (commonest first)")?;
        for reason in &jobs.dead_reasons {
            outln!("  {:>9}  {}", reason.count, reason.error.as_deref().unwrap_or("(no error recorded)"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_the_worker_parses_them() {
        assert_eq!(parse_durations("1s,10s,60s,5m"), Ok(quern_core::retry::DEFAULT_TIERS.to_vec()));
        assert_eq!(parse_durations("500ms, 1h30m"), Ok(vec![Duration::from_millis(500), Duration::from_secs(5_400)]));
        assert_eq!(parse_durations("2d"), Ok(vec![Duration::from_secs(172_800)]));
        for bad in ["", "soon", "10", "1s,,2s", "-1s"] {
            assert!(parse_durations(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn each_delay_queue_is_listed_once_between_work_and_dead_queues() {
        let topology = Topology::new("q").expect("prefix");
        let tiers = [Duration::from_secs(1), Duration::from_millis(1000), Duration::from_millis(250)];
        assert_eq!(queue_names(&topology, &tiers), ["q.ingest", "q.retry.1s", "q.retry.250ms", "q.dead"]);
    }
}
