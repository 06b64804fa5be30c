//! Counting a scenario's outcome: nothing lost, nothing duplicated.

use std::collections::{HashMap, HashSet};

use lapin::options::{BasicAckOptions, BasicGetOptions};
use quern_core::{Chunker, Job};
use quern_queue::headers;
use uuid::Uuid;

use crate::support::Scenario;

/// What happened to a scenario's jobs.
#[derive(Debug, Default)]
pub struct Figures {
    pub confirmed: usize,
    pub succeeded: usize,
    pub dead_lettered: usize,
    pub still_queued: usize,
    pub lost: usize,
    pub duplicated: usize,
    /// Reasons of the dead letters, counted.
    pub dead_reasons: HashMap<String, usize>,
    /// Dead letters whose body is not a job (no job id to count).
    pub dead_without_job: usize,
    /// Dead letters without a reason header.
    pub dead_without_reason: usize,
}

impl Figures {
    pub fn print(&self, scenario: &str, faults: &str) {
        println!(
            "CHAOS scenario={scenario} confirmed={} faults=\"{faults}\" succeeded={} dead_lettered={} still_queued={} lost={} duplicated={}",
            self.confirmed, self.succeeded, self.dead_lettered + self.dead_without_job, self.still_queued, self.lost, self.duplicated
        );
    }
}

/// Drains the dead-letter queue and every queue a job may still wait in, then counts, once the workers are
/// stopped. `jobs` are the confirmed valid jobs, to check each document holds exactly its job's chunks.
pub async fn settle(scenario: &Scenario, confirmed: &[Uuid], jobs: &[Job], chunker: &Chunker) -> Figures {
    let mut figures = Figures { confirmed: confirmed.len(), ..Figures::default() };
    let client = scenario.db.client().await;
    let succeeded: HashSet<Uuid> = client
        .query("SELECT job_id FROM quern_jobs WHERE status = 'succeeded' AND job_id = ANY($1)", &[&confirmed])
        .await
        .expect("succeeded jobs")
        .iter()
        .map(|row| row.get(0))
        .collect();
    figures.succeeded = succeeded.len();

    let connection = quern_queue::connect(&quern_testkit::amqp_url(), "chaos-ledger").await.expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    let mut dead: HashSet<Uuid> = HashSet::new();
    let topology = &scenario.queues.topology;
    while let Some(message) =
        channel.basic_get(topology.dead_queue().as_str().into(), BasicGetOptions::default()).await.expect("get")
    {
        let table = message.delivery.properties.headers().clone();
        match headers::get_str(table.as_ref(), headers::REASON) {
            Some(reason) => *figures.dead_reasons.entry(reason).or_default() += 1,
            None => figures.dead_without_reason += 1,
        }
        match Job::decode(&message.delivery.data) {
            Ok(job) => {
                dead.insert(job.job_id);
            }
            Err(_) => figures.dead_without_job += 1,
        }
        message.delivery.ack(BasicAckOptions::default()).await.expect("ack");
    }
    figures.dead_lettered = dead.len();

    let mut queued: HashSet<Uuid> = HashSet::new();
    let waiting = [
        topology.ingest_queue(),
        topology.retry_queue(std::time::Duration::from_millis(200)),
        topology.retry_queue(std::time::Duration::from_millis(500)),
        topology.retry_queue(std::time::Duration::from_secs(1)),
    ];
    for queue in waiting {
        while let Ok(Some(message)) = channel.basic_get(queue.as_str().into(), BasicGetOptions::default()).await {
            if let Ok(job) = Job::decode(&message.delivery.data) {
                queued.insert(job.job_id);
            }
            // Not acked: closing the channel returns them; they are only counted.
        }
    }
    let _ = channel.close(200, "counted".into()).await;
    figures.still_queued = queued.len();
    figures.lost =
        confirmed.iter().filter(|id| !succeeded.contains(id) && !dead.contains(id) && !queued.contains(id)).count();

    // Duplicated: a document whose stored chunks are not exactly the chunks of its (only) job.
    for job in jobs.iter().filter(|job| succeeded.contains(&job.job_id)) {
        let rows = client
            .query(
                "SELECT content FROM quern_chunks WHERE collection = $1 AND document_id = $2 ORDER BY chunk_index",
                &[&job.collection, &job.document_id],
            )
            .await
            .expect("chunks");
        let stored: Vec<String> = rows.iter().map(|row| row.get(0)).collect();
        if stored != chunker.split(&job.text) {
            figures.duplicated += 1;
        }
    }
    figures.duplicated += scenario.db.duplicate_chunk_rows().await as usize;
    figures
}
