//! `quern search "<query>" --collection C -k 5 [--ef-search N]`.

use std::process::ExitCode;

use anyhow::Context;
use quern_config::{DatabaseArgs, EmbeddingArgs};
use quern_embed::{EmbedError, EmbeddingClient};
use quern_store::Store;
use serde_json::json;

use crate::output::outln;

pub async fn run(
    database: &DatabaseArgs,
    embedding: &EmbeddingArgs,
    query: &str,
    collection: &str,
    k: usize,
    ef_search: Option<u32>,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let client = EmbeddingClient::new(&embedding.client_config()?)?;
    let vector = client
        .embed_batch(&[query])
        .await
        .map_err(|error| anyhow::anyhow!(query_failure(client.shown_endpoint(), &error)))?
        .pop()
        .context("the embedding API returned no vector")?;
    let store = Store::connect(&database.store_config()?)?;
    let vector = pgvector::Vector::from(vector);
    let hits = match ef_search {
        Some(ef_search) => store.search_with_ef(collection, vector, k, ef_search).await?,
        None => store.search(collection, vector, k).await?,
    };
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

/// Why the query could not be embedded, in one line naming the provider's answer: a status with the provider's
/// own message (read from its error body), or what kept it from answering (which already names the endpoint).
fn query_failure(endpoint: &str, error: &EmbedError) -> String {
    match error.answer() {
        EmbedError::Transport { .. } => format!("cannot embed the query: {error}"),
        EmbedError::Status { status, message, .. } => {
            format!("cannot embed the query: the embedding API at {endpoint} answered {status}: {message}")
        }
        other => format!("cannot embed the query with {endpoint}: {other}"),
    }
}

/// The first `max` characters on one line.
fn snippet(text: &str, max: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &flat[..cut]),
        None => flat,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_provider_failure_reads_as_one_line_with_its_status_and_message() {
        let body = r#"{"error":{"message":"Incorrect API key provided: sk-abc***","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#;
        let revoked = EmbedError::from_answer(401, body, None);
        assert_eq!(
            query_failure("http://h:1/v1/embeddings", &revoked),
            "cannot embed the query: the embedding API at http://h:1/v1/embeddings answered 401: Incorrect API key \
             provided: sk-abc***"
        );
        let away =
            EmbedError::Transport { endpoint: "http://h:1/v1/embeddings".into(), reason: "connection refused".into() };
        assert_eq!(
            query_failure("http://h:1/v1/embeddings", &away),
            "cannot embed the query: no answer from the embedding API at http://h:1/v1/embeddings: connection refused"
        );
    }
}
