//! `quern status <job_id>`: one job's fate. `quern status`: an overview for operators, each queue's depth and
//! consumers, and recent jobs by status with the commonest reasons jobs died.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::anyhow;
use quern_core::Topology;
use quern_queue::depth::{queue_depths, QueueDepth};
use quern_store::{JobOverview, Store};
use quern_worker::config::{BrokerArgs, DatabaseArgs};
use secrecy::ExposeSecret;
use serde_json::{json, Value};

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
    let store = Store::connect(&database.store_config())?;
    let Some(job) = store.job(job_id).await? else {
        if as_json {
            println!("{}", json!({"job_id": job_id, "status": null}));
        } else {
            println!("job {job_id}: unknown (no worker has picked it up yet, or it never reached the queue)");
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
            "attempts": job.attempts,
            "chunk_count": job.chunk_count,
            "last_error": job.last_error,
            "created_at": job.created_at.to_rfc3339(),
            "updated_at": job.updated_at.to_rfc3339(),
        });
        println!("{value}");
    } else {
        println!("job         {}", job.job_id);
        println!("status      {}", job.status.as_str());
        println!(
            "document    {} / {}",
            job.collection.as_deref().unwrap_or("?"),
            job.document_id.as_deref().unwrap_or("?")
        );
        println!("op          {}", job.op.as_deref().unwrap_or("?"));
        println!("attempts    {}", job.attempts);
        if let Some(chunks) = job.chunk_count {
            println!("chunks      {chunks}");
        }
        if let Some(error) = &job.last_error {
            println!("last error  {error}");
        }
        println!("updated     {}", job.updated_at.to_rfc3339());
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads the broker and the database at once; prints whatever part answered and exits 1 if either did not.
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
    let names = queue_names(&broker.topology, &tiers);
    let (queues, jobs) = tokio::join!(read_queues(broker, &names), read_jobs(database, window));

    if as_json {
        println!("{}", overview_json(queues.as_ref().ok().map(Vec::as_slice), jobs.as_ref().ok()));
    } else {
        if let Ok(queues) = &queues {
            print_queues(queues);
        }
        if let Ok(jobs) = &jobs {
            if queues.is_ok() {
                println!();
            }
            print_jobs(jobs, window_text.trim());
        }
    }
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
fn parse_durations(text: &str) -> Result<Vec<Duration>, String> {
    text.split(',').map(quern_worker::config::parse_duration).collect()
}

/// The work queue, one delay queue per distinct tier, then the dead-letter queue.
fn queue_names(topology: &Topology, tiers: &[Duration]) -> Vec<String> {
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

async fn read_queues(broker: &BrokerArgs, names: &[String]) -> anyhow::Result<Vec<QueueDepth>> {
    let read = async {
        let connection = quern_queue::connect(broker.amqp_url.expose_secret(), "quern status").await?;
        let depths = queue_depths(&connection, names).await;
        let _ = connection.close(200, "status read".into()).await;
        Ok(depths?)
    };
    tokio::time::timeout(BROKER_TIMEOUT, read)
        .await
        .map_err(|_| anyhow!("RabbitMQ did not answer within {} s", BROKER_TIMEOUT.as_secs()))?
}

async fn read_jobs(database: &DatabaseArgs, window: Duration) -> anyhow::Result<JobOverview> {
    let store = Store::connect(&database.store_config())?;
    Ok(store.job_overview(window).await?)
}

fn overview_json(queues: Option<&[QueueDepth]>, jobs: Option<&JobOverview>) -> Value {
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
        })
    });
    json!({"queues": queues, "jobs": jobs, "dead_reasons": dead_reasons})
}

fn print_queues(queues: &[QueueDepth]) {
    let width = queues.iter().map(|queue| queue.name.len()).chain(["queue".len()]).max().unwrap_or(0);
    println!("{:<width$}  {:>9}  {:>9}", "queue", "ready", "consumers");
    for queue in queues {
        match (queue.messages, queue.consumers) {
            (Some(messages), Some(consumers)) => println!("{:<width$}  {messages:>9}  {consumers:>9}", queue.name),
            _ => println!("{:<width$}  {:>9}", queue.name, "missing"),
        }
    }
}

fn print_jobs(jobs: &JobOverview, window: &str) {
    println!("jobs updated in the last {window}");
    for (status, count) in [
        ("queued", jobs.queued),
        ("running", jobs.running),
        ("succeeded", jobs.succeeded),
        ("failed", jobs.failed),
        ("dead", jobs.dead),
    ] {
        println!("  {status:<10} {count:>9}");
    }
    if !jobs.dead_reasons.is_empty() {
        println!();
        println!("why they died (commonest first)");
        for reason in &jobs.dead_reasons {
            println!("  {:>9}  {}", reason.count, reason.error.as_deref().unwrap_or("(no error recorded)"));
        }
    }
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
