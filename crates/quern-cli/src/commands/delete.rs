//! `quern delete --collection C ID...`.

use std::process::ExitCode;

use quern_config::BrokerArgs;
use quern_producer::{Job, Producer, ProducerConfig};
use secrecy::ExposeSecret;

use crate::output::outln;

pub async fn run(broker: &BrokerArgs, collection: &str, document_ids: &[String]) -> anyhow::Result<ExitCode> {
    let config = ProducerConfig::new(broker.url()?.expose_secret()).with_topology(broker.topology.clone());
    let producer = Producer::connect(config).await?;
    let jobs: Vec<Job> = document_ids.iter().map(|id| Job::delete(collection, id)).collect();
    let ids = producer.enqueue_many(&jobs).await?;
    for (job_id, document_id) in ids.iter().zip(document_ids) {
        outln!("{job_id}\tdelete\t{document_id}")?;
    }
    Ok(ExitCode::SUCCESS)
}
