//! `quern search "<query>" --collection C -k 5`.

use std::process::ExitCode;

use anyhow::Context;
use quern_embed::EmbeddingClient;
use quern_store::Store;
use quern_worker::config::{DatabaseArgs, EmbeddingArgs};
use serde_json::json;

use crate::output::outln;

pub async fn run(
    database: &DatabaseArgs,
    embedding: &EmbeddingArgs,
    query: &str,
    collection: &str,
    k: usize,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let client = EmbeddingClient::new(&embedding.client_config())?;
    let vector = client
        .embed_batch(&[query])
        .await
        .with_context(|| format!("embedding the query with {}", client.endpoint()))?
        .pop()
        .context("the embedding API returned no vector")?;
    let store = Store::connect(&database.store_config())?;
    let hits = store.search(collection, pgvector::Vector::from(vector), k).await?;
    if as_json {
        let results: Vec<_> = hits
            .iter()
            .map(|h| json!({"document_id": h.document_id, "chunk_index": h.chunk_index, "score": h.score, "content": h.content}))
            .collect();
        outln!("{}", json!({"query": query, "collection": collection, "results": results}))?;
        return Ok(ExitCode::SUCCESS);
    }
    if hits.is_empty() {
        outln!("no chunks in collection `{collection}`")?;
        return Ok(ExitCode::SUCCESS);
    }
    outln!("{:>4}  {:>6}  document#chunk", "rank", "score")?;
    for (rank, hit) in hits.iter().enumerate() {
        outln!("{:>4}  {:>6.3}  {}#{}", rank + 1, hit.score, hit.document_id, hit.chunk_index)?;
        outln!("      {}", snippet(&hit.content, 200))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The first `max` characters on one line.
fn snippet(text: &str, max: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &flat[..cut]),
        None => flat,
    }
}
