//! Nearest chunks of a collection by cosine distance: each indexed segment through its HNSW index, the hot and
//! sealed ones by an exact scan, merged by Postgres.

use pgvector::Vector;
use tokio_postgres::GenericClient;

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
    /// The `k` chunks of `collection` nearest to `query`, each indexed segment's HNSW scan keeping
    /// [`default_ef_search`] candidates: the segments' share of `2k` (at least 40 in all), at least `k`, and more
    /// as the largest segment grows, since a graph of more rows needs a wider search for the same recall
    /// (measured: see the README, "Segments").
    pub async fn search(&self, collection: &str, query: Vector, k: usize) -> Result<Vec<SearchHit>, StoreError> {
        self.search_with(collection, query, k, None).await
    }

    /// The `hnsw.ef_search` [`Store::search`] uses now for `k` chunks ([`default_ef_search`] of the indexed
    /// segments).
    pub async fn search_ef_search(&self, k: usize) -> Result<u32, StoreError> {
        let client = self.client().await?;
        read_default_ef_search(&**client, k).await
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
        self.timed("search", async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(StoreError::db("begin"))?;
            let ef_search = match ef_search {
                Some(ef) => ef.clamp(1, 1000),
                None => read_default_ef_search(&*tx, k).await?,
            };
            // Each indexed segment's HNSW scan returns its ef_search nearest rows before the collection filter;
            // iterative scans (pgvector 0.8) keep scanning until `k` rows pass the filter. Strict order, because
            // Postgres merges the segments' ordered scans (Merge Append) and would stop early on a late row.
            tx.query_one(
                "SELECT set_config('hnsw.iterative_scan', 'strict_order', true),
                        set_config('hnsw.ef_search', $1, true)",
                &[&ef_search.to_string()],
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

/// [`default_ef_search`] of the indexed segments as `quern_segments` records them. Their `row_count` is the rows
/// when sealed or merged: deletes since then make it an upper bound, the safe side for recall, and reading it
/// costs nothing like counting.
async fn read_default_ef_search(client: &impl GenericClient, k: usize) -> Result<u32, StoreError> {
    let segments = client
        .query_one("SELECT count(*), coalesce(max(row_count), 0) FROM quern_segments WHERE state = 'indexed'", &[])
        .await
        .map_err(StoreError::db("read the indexed segments"))?;
    let indexed = usize::try_from(segments.get::<_, i64>(0)).unwrap_or(0);
    Ok(default_ef_search(k, indexed, u64::try_from(segments.get::<_, i64>(1)).unwrap_or(0)))
}

/// Rows of the largest indexed segment per candidate its scan keeps by default: one in 5,000. A query's true
/// neighbours hide among more look-alikes in a larger graph, so the search must widen with it; measured at
/// 1,000,000 generated vectors, where the largest segment holds 512,000 rows (README, "Segments").
pub const ROWS_PER_CANDIDATE: u64 = 5_000;

/// `hnsw.ef_search` of [`Store::search`] when `indexed_segments` segments are read through their HNSW index, the
/// largest holding `largest_segment_rows`: the largest of
/// - twice `k` (at least pgvector's default of 40) shared out among the indexed segments, since together their
///   candidates decide the recall and each scan's cost grows with its own;
/// - `k`, so that one segment alone can fill the page;
/// - one candidate per [`ROWS_PER_CANDIDATE`] rows of the largest segment;
///
/// and at most 1,000 (pgvector's maximum). One value for every segment: `hnsw.ef_search` is a setting of the
/// statement, and one statement merges the segments' ordered scans.
pub fn default_ef_search(k: usize, indexed_segments: usize, largest_segment_rows: u64) -> u32 {
    let k = k.clamp(1, 1000) as u64;
    let shared = (2 * k).max(40).div_ceil(indexed_segments.max(1) as u64);
    let by_size = largest_segment_rows.div_ceil(ROWS_PER_CANDIDATE);
    u32::try_from(shared.max(k).max(by_size).min(1000)).unwrap_or(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_tables_share_forty_candidates_with_at_least_k_each() {
        assert_eq!(default_ef_search(10, 0, 0), 40);
        assert_eq!(default_ef_search(10, 1, 30_000), 40);
        assert_eq!(default_ef_search(10, 4, 32_000), 10);
        assert_eq!(default_ef_search(5, 8, 8_000), 5);
        assert_eq!(default_ef_search(50, 2, 8_000), 50);
    }

    #[test]
    fn a_large_segment_widens_the_search() {
        assert_eq!(default_ef_search(10, 8, 512_000), 103);
        assert_eq!(default_ef_search(10, 8, 128_000), 26);
        assert_eq!(default_ef_search(10, 3, 2_048_000), 410);
        assert_eq!(default_ef_search(10, 3, 100_000_000), 1000);
        assert_eq!(default_ef_search(2000, 1, 0), 1000);
    }
}
