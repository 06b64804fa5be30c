//! Nearest chunks of a collection by cosine distance: each indexed segment through its HNSW index, the hot and
//! sealed ones by an exact scan, merged by Postgres.

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
    /// The `k` chunks of `collection` nearest to `query`. Each indexed segment's HNSW scan keeps
    /// [`default_ef_search`]`(k)` candidates shared out among the indexed segments, and at least `k`: a scan's
    /// cost grows with its candidates, and the segments' candidates together decide the recall (measured: see
    /// the README, "Segments").
    pub async fn search(&self, collection: &str, query: Vector, k: usize) -> Result<Vec<SearchHit>, StoreError> {
        self.search_with(collection, query, k, None).await
    }

    /// [`Store::search`] with `ef_search` candidates kept by each indexed segment's HNSW scan (1..=1000): more
    /// means better recall and slower searches.
    pub async fn search_with_ef(
        &self,
        collection: &str,
        query: Vector,
        k: usize,
        ef_search: u32,
    ) -> Result<Vec<SearchHit>, StoreError> {
        self.search_with(collection, query, k, Some(ef_search)).await
    }

    async fn search_with(
        &self,
        collection: &str,
        query: Vector,
        k: usize,
        ef_search: Option<u32>,
    ) -> Result<Vec<SearchHit>, StoreError> {
        let limit = i64::try_from(k.clamp(1, 1000)).unwrap_or(1000);
        // Fixed, or shared out among the indexed segments (counted in the same statement).
        let (ef_total, ef_floor) = match ef_search {
            Some(ef) => (i32::try_from(ef.clamp(1, 1000)).unwrap_or(1000), 0),
            None => (i32::try_from(default_ef_search(k)).unwrap_or(1000), limit as i32),
        };
        let shared_out = ef_search.is_none();
        self.timed("search", async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(StoreError::db("begin"))?;
            // Each indexed segment's HNSW scan returns its ef_search nearest rows before the collection filter;
            // iterative scans (pgvector 0.8) keep scanning until `k` rows pass the filter. Strict order, because
            // Postgres merges the segments' ordered scans (Merge Append) and would stop early on a late row.
            tx.query_one(
                "SELECT set_config('hnsw.iterative_scan', 'strict_order', true),
                        set_config('hnsw.ef_search', least(1000, greatest($2::int, CASE WHEN $3 THEN
                            ceil($1::int / greatest(1, (SELECT count(*) FROM quern_segments
                                                        WHERE state = 'indexed'))::float8)::int
                            ELSE $1::int END))::text, true)",
                &[&ef_total, &ef_floor, &shared_out],
            )
            .await
            .map_err(StoreError::db("configure search"))?;
            let rows = tx
                .query(
                    // `$2::vector`: with half-precision storage the column is `halfvec`, and the query vector
                    // is cast to it (an implicit cast), so the segments' indexes still order the scan.
                    "SELECT document_id, chunk_index, content, 1 - (embedding <=> $2::vector) AS score
                     FROM quern_chunks WHERE collection = $1
                     ORDER BY embedding <=> $2::vector LIMIT $3",
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
            // Sorted again so that callers never depend on the plan's order.
            hits.sort_by(|a, b| b.score.total_cmp(&a.score));
            Ok(hits)
        })
        .await
    }
}

/// `hnsw.ef_search` of [`Store::search`]: twice `k`, and at least pgvector's default of 40.
pub fn default_ef_search(k: usize) -> u32 {
    u32::try_from(k.clamp(1, 1000) * 2).unwrap_or(2000).max(40)
}
