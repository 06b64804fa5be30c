//! `quern status <job_id>`.

use std::process::ExitCode;

use quern_store::Store;
use quern_worker::config::DatabaseArgs;
use serde_json::json;

/// Exit status when no worker has recorded the job (yet).
const UNKNOWN_JOB: u8 = 4;

pub async fn run(database: &DatabaseArgs, job_id: uuid::Uuid, as_json: bool) -> anyhow::Result<ExitCode> {
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
