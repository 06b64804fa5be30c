//! Nearest chunks of a collection by cosine distance: each indexed segment through its own HNSW scan, as wide as
//! that segment needs, and the hot and sealed segments by one exact scan; the results merged here.

use std::future::Future;
use std::pin::Pin;

use pgvector::Vector;
use tokio_postgres::{GenericClient, IsolationLevel, Row};

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

/// How widely a search reads one indexed segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentSearchWidth {
    /// The segment.
    pub segment: i64,
    /// Its rows as `quern_segments` records them (when sealed or merged).
    pub rows: u64,
    /// The candidates its HNSW scan keeps (`hnsw.ef_search`).
    pub ef_search: u32,
}

/// Each indexed segment's scan: its rows, nearest first (a prepared statement, so that the requests of all the
/// segments go out together; planned for each segment's id, so that only that segment is read).
const INDEXED_SEGMENT_SCAN: &str = "
    SELECT document_id, chunk_index, content, 1 - (embedding <=> $2::vector) AS score
    FROM quern_chunks WHERE collection = $1 AND segment = $4
    ORDER BY embedding <=> $2::vector LIMIT $3";

/// The segments without a usable index (the hot one, sealed ones), scanned exactly in one statement: every
/// segment but those read through their index.
const EXACT_SCAN: &str = "
    SELECT document_id, chunk_index, content, 1 - (embedding <=> $2::vector) AS score
    FROM quern_chunks WHERE collection = $1 AND segment <> ALL($4::bigint[])
    ORDER BY embedding <=> $2::vector LIMIT $3";

type RowsFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<Row>, tokio_postgres::Error>> + Send + 'a>>;

impl Store {
    /// The `k` chunks of `collection` nearest to `query`, each indexed segment's HNSW scan keeping
    /// [`default_ef_search`] candidates for its size: a graph of more rows needs a wider search for the same
    /// recall, and a small one far fewer (measured: see the README, "Segments").
    pub async fn search(&self, collection: &str, query: Vector, k: usize) -> Result<Vec<SearchHit>, StoreError> {
        self.search_with(collection, query, k, None).await
    }

    /// The `hnsw.ef_search` of each indexed segment's scan in [`Store::search`] for `k` chunks now
    /// ([`default_ef_search`]), largest segment first.
    pub async fn search_widths(&self, k: usize) -> Result<Vec<SegmentSearchWidth>, StoreError> {
        let client = self.client().await?;
        read_search_widths(&**client, k, None).await
    }

    /// [`Store::search`] with `ef_search` candidates kept by every indexed segment's HNSW scan (1..=1000): more
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
        let k = k.clamp(1, 1000);
        let limit = k as i64;
        self.timed("search", async {
            let mut client = self.client().await?;
            // One snapshot for every segment's statement, so that a document re-ingested meanwhile is found once,
            // in one version. The lock comes first (LOCK takes no snapshot; the next statement does): a merge's
            // swap detaches its source segments under an exclusive lock, so it waits until this search ends, or
            // this search waits for it and then sees the merged segment in place of its sources, never both or
            // neither. Writers and builds do not conflict with it.
            let tx = client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(StoreError::db("begin"))?;
            // Iterative scans (pgvector 0.8) keep scanning until `k` rows pass the collection filter; strict
            // order, so that the LIMIT takes the nearest. Custom plans: each statement is planned for its
            // segment ids, so that the partitions it does not read are pruned before it runs.
            tx.batch_execute(
                "LOCK TABLE quern_chunks IN ACCESS SHARE MODE;
                 SET LOCAL hnsw.iterative_scan = strict_order;
                 SET LOCAL plan_cache_mode = force_custom_plan",
            )
            .await
            .map_err(StoreError::db("configure search"))?;
            let widths = read_search_widths(&*tx, k, ef_search).await?;
            let indexed_scan = tx.prepare_cached(INDEXED_SEGMENT_SCAN).await.map_err(StoreError::db("search"))?;
            let exact_scan = tx.prepare_cached(EXACT_SCAN).await.map_err(StoreError::db("search"))?;
            let settings: Vec<String> =
                widths.iter().map(|width| format!("SET LOCAL hnsw.ef_search = {}", width.ef_search)).collect();
            let indexed: Vec<i64> = widths.iter().map(|width| width.segment).collect();
            // All requests pipelined on the connection: tokio-postgres sends each when its future is first
            // polled, and `try_join_all` polls them in order, so each segment's `SET` precedes its scan.
            let (tx_ref, query, indexed_ref) = (&tx, &query, &indexed);
            let (indexed_scan, exact_scan) = (&indexed_scan, &exact_scan);
            let mut requests: Vec<RowsFuture<'_>> = Vec::with_capacity(2 * widths.len() + 1);
            for (setting, segment) in settings.iter().zip(indexed_ref) {
                requests.push(Box::pin(async move { tx_ref.batch_execute(setting).await.map(|()| Vec::new()) }));
                requests.push(Box::pin(async move {
                    tx_ref.query(indexed_scan, &[&collection, query, &limit, segment]).await
                }));
            }
            requests.push(Box::pin(async move {
                tx_ref.query(exact_scan, &[&collection, query, &limit, indexed_ref]).await
            }));
            let results = futures::future::try_join_all(requests).await.map_err(StoreError::db("search"))?;
            tx.commit().await.map_err(StoreError::db("commit"))?;
            let mut hits: Vec<SearchHit> = results
                .iter()
                .flatten()
                .map(|row| SearchHit {
                    document_id: row.get(0),
                    chunk_index: row.get(1),
                    content: row.get(2),
                    score: row.get(3),
                })
                .collect();
            hits.sort_by(|a, b| b.score.total_cmp(&a.score));
            hits.truncate(k);
            Ok(hits)
        })
        .await
    }
}

/// The indexed segments as `quern_segments` records them, each with `ef_search` or else [`default_ef_search`]
/// for its size, largest first. Their `row_count` is the rows when sealed or merged: deletes since then make it
/// an upper bound, the safe side for recall, and reading it costs nothing like counting.
async fn read_search_widths(
    client: &impl GenericClient,
    k: usize,
    ef_search: Option<u32>,
) -> Result<Vec<SegmentSearchWidth>, StoreError> {
    let rows = client
        .query(
            "SELECT segment, row_count FROM quern_segments WHERE state = 'indexed'
             ORDER BY row_count DESC, segment",
            &[],
        )
        .await
        .map_err(StoreError::db("read the indexed segments"))?;
    let indexed = rows.len();
    Ok(rows
        .iter()
        .map(|row| {
            let rows = u64::try_from(row.get::<_, i64>(1)).unwrap_or(0);
            let ef_search = match ef_search {
                Some(ef) => ef.clamp(1, 1000),
                None => default_ef_search(k, indexed, rows),
            };
            SegmentSearchWidth { segment: row.get(0), rows, ef_search }
        })
        .collect())
}

/// Rows of an indexed segment per candidate its scan keeps by default: one in 3,000. A query's true neighbours
/// hide among more look-alikes in a larger graph, so the search must widen with it; measured at 1,000,000
/// generated vectors in segments of 8,000 to 512,000 rows, where one in 5,000 found 0.934 of the true nearest
/// 10, one in 3,000 0.969 and one in 2,000 0.987 (README, "Segments").
pub const ROWS_PER_CANDIDATE: u64 = 3_000;

/// `hnsw.ef_search` of [`Store::search`] in an indexed segment of `segment_rows` rows when `indexed_segments`
/// segments are read through their HNSW index: the largest of
/// - twice `k` (at least pgvector's default of 40) shared out among the indexed segments, since together their
///   candidates decide the recall of a small table;
/// - `k`, so that the segment alone can fill the page;
/// - one candidate per [`ROWS_PER_CANDIDATE`] rows of the segment;
///
/// and at most 1,000 (pgvector's maximum). Each segment its own: the small ones of a large table need far fewer
/// candidates than its largest.
pub fn default_ef_search(k: usize, indexed_segments: usize, segment_rows: u64) -> u32 {
    let k = k.clamp(1, 1000) as u64;
    let shared = (2 * k).max(40).div_ceil(indexed_segments.max(1) as u64);
    let by_size = segment_rows.div_ceil(ROWS_PER_CANDIDATE);
    u32::try_from(shared.max(k).max(by_size).min(1000)).unwrap_or(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_tables_share_forty_candidates_with_at_least_k_each() {
        assert_eq!(default_ef_search(10, 0, 0), 40);
        assert_eq!(default_ef_search(10, 1, 30_000), 40);
        assert_eq!(default_ef_search(10, 4, 32_000), 11);
        assert_eq!(default_ef_search(10, 4, 30_000), 10);
        assert_eq!(default_ef_search(5, 8, 8_000), 5);
        assert_eq!(default_ef_search(50, 2, 8_000), 50);
    }

    #[test]
    fn a_large_segment_widens_the_search() {
        assert_eq!(default_ef_search(10, 8, 512_000), 171);
        assert_eq!(default_ef_search(10, 8, 128_000), 43);
        assert_eq!(default_ef_search(10, 3, 2_048_000), 683);
        assert_eq!(default_ef_search(10, 3, 100_000_000), 1000);
        assert_eq!(default_ef_search(2000, 1, 0), 1000);
    }
}
