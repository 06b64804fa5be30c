//! Nearest chunks of a collection by cosine distance, through the HNSW index.

use pgvector::Vector;

use crate::{Store, StoreError};

/// One search result.
#[derive(Debug, Clone)]
pub struct SearchHit {
    /// Document the chunk belongs to.
    pub document_id: String,
    /// Position of the chunk in its document.
    pub chunk_index: i32,
    /// The chunk's text.
    pub content: String,
    /// Cosine similarity, 1 for the same direction.
    pub score: f64,
}

impl Store {
    /// The `k` chunks of `collection` nearest to `query`.
    pub async fn search(&self, collection: &str, query: Vector, k: usize) -> Result<Vec<SearchHit>, StoreError> {
        let limit = i64::try_from(k.clamp(1, 1000)).unwrap_or(1000);
        self.timed("search", async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(StoreError::db("begin"))?;
            // The HNSW scan returns its ef_search nearest rows before the collection filter; iterative scans
            // (pgvector 0.8) keep scanning until `k` rows pass the filter.
            tx.batch_execute(&format!(
                "SET LOCAL hnsw.iterative_scan = relaxed_order; SET LOCAL hnsw.ef_search = {}",
                (limit * 2).max(40)
            ))
            .await
            .map_err(StoreError::db("configure search"))?;
            let rows = tx
                .query(
                    "SELECT document_id, chunk_index, content, 1 - (embedding <=> $2) AS score
                     FROM quern_chunks WHERE collection = $1
                     ORDER BY embedding <=> $2 LIMIT $3",
                    &[&collection, &query, &limit],
                )
                .await
                .map_err(StoreError::db("search"))?;
            tx.commit().await.map_err(StoreError::db("commit"))?;
            let mut hits: Vec<SearchHit> = rows
                .iter()
                .map(|row| SearchHit {
                    document_id: row.get(0),
                    chunk_index: row.get(1),
                    content: row.get(2),
                    score: row.get(3),
                })
                .collect();
            // relaxed_order may return neighbours slightly out of order.
            hits.sort_by(|a, b| b.score.total_cmp(&a.score));
            Ok(hits)
        })
        .await
    }
}
