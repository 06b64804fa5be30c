//! The segments of `quern_chunks` (migration 4): what each holds, its index, and what maintenance is doing.
//!
//! `quern_chunks` is partitioned by `segment`. Writers insert into the one *hot* segment, which has no vector index:
//! a commit pays for no graph upkeep, and a search scans the hot segment exactly, so a committed chunk is found at
//! once. A worker holding the maintenance lease ([`crate::maintenance`]) seals the hot segment when it is full,
//! builds the sealed segment's HNSW index in one bulk pass, and merges indexed segments in tiers so that a search
//! visits few of them. A query on `quern_chunks` reads each segment through its own index and merges the results.

use chrono::{DateTime, Utc};

use crate::index::{read_vector_storage, HnswParams, InvalidSetting, VectorStorage};
use crate::{Store, StoreError};

/// Advisory lock ("quern_sg") that `quern_hot_segment()` takes shared for the rest of the transaction and sealing
/// takes exclusively; the same number is written in `migrations/0004_chunk_segments.sql`.
pub const SEGMENT_SWITCH_LOCK: i64 = 0x7175_6572_6e5f_7367;
/// Session advisory lock ("quern_mt") held by the one worker doing maintenance; it ends with its connection.
/// A store in a schema of its own has a lease of its own ([`maintenance_lease`]).
pub const MAINTENANCE_LEASE: i64 = 0x7175_6572_6e5f_6d74;

/// The maintenance lease of the tables in `schema` (`None`: the default schema's, [`MAINTENANCE_LEASE`]). Advisory
/// locks are per database, not per schema: a shadow run's maintainer must not hold production's lease.
pub fn maintenance_lease(schema: Option<&str>) -> i64 {
    match schema {
        None => MAINTENANCE_LEASE,
        // FNV-1a of the name: stable across releases and processes (std's hasher is seeded).
        Some(schema) => {
            let hash =
                schema.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
            MAINTENANCE_LEASE ^ (hash as i64)
        }
    }
}

/// The table of segment `id`.
pub fn segment_table(id: i64) -> String {
    format!("quern_chunks_segment_{id}")
}

/// The HNSW index of segment `id`.
pub fn segment_index(id: i64) -> String {
    format!("quern_chunks_segment_{id}_hnsw")
}

/// Where a segment is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentState {
    /// Receives the inserts; searched exactly.
    Hot,
    /// Full; its index is not built yet (searched exactly meanwhile).
    Sealed,
    /// Searched through its HNSW index.
    Indexed,
    /// A merge's new table, being filled and indexed; not searched until it replaces its sources.
    Merging,
}

impl SegmentState {
    fn parse(text: &str) -> Result<SegmentState, StoreError> {
        Ok(match text {
            "hot" => SegmentState::Hot,
            "sealed" => SegmentState::Sealed,
            "indexed" => SegmentState::Indexed,
            "merging" => SegmentState::Merging,
            other => return Err(StoreError::Config(format!("unknown segment state {other:?} in quern_segments"))),
        })
    }

    /// Its name in `quern_segments.state`.
    pub fn as_str(self) -> &'static str {
        match self {
            SegmentState::Hot => "hot",
            SegmentState::Sealed => "sealed",
            SegmentState::Indexed => "indexed",
            SegmentState::Merging => "merging",
        }
    }
}

/// One segment as `quern index status` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Its number (the partition bound).
    pub id: i64,
    /// Where it is in its life.
    pub state: SegmentState,
    /// Rows it holds now (counted; a merge in progress shows what it has copied so far, if visible).
    pub rows: u64,
    /// Size of its table and indexes on disk.
    pub size_bytes: u64,
    /// Its HNSW index, if one exists.
    pub index: Option<SegmentIndex>,
    /// For a merge in progress or done: the segments it replaces or replaced.
    pub merged_from: Vec<i64>,
    /// When it was created, sealed and indexed.
    pub created_at: DateTime<Utc>,
    /// When it was sealed (or merged).
    pub sealed_at: Option<DateTime<Utc>>,
    /// When its index became valid.
    pub indexed_at: Option<DateTime<Utc>>,
}

/// A segment's HNSW index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentIndex {
    /// Its name.
    pub name: String,
    /// False while a concurrent build runs, and after one failed: searches ignore it.
    pub valid: bool,
    /// Size on disk.
    pub size_bytes: u64,
    /// Its `CREATE INDEX` statement.
    pub definition: String,
}

/// An index build in progress on a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentBuild {
    /// The segment's table.
    pub table: String,
    /// Backend running it.
    pub pid: i32,
    /// Its phase, as `pg_stat_progress_create_index` names it.
    pub phase: String,
    /// Rows indexed so far.
    pub tuples_done: u64,
}

/// What `quern index status` shows.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentsStatus {
    /// Every segment, oldest first.
    pub segments: Vec<Segment>,
    /// Index builds running now.
    pub builds: Vec<SegmentBuild>,
    /// Backend holding the maintenance lease, if a worker does.
    pub maintainer_pid: Option<i32>,
    /// Rows of `quern_chunks`, searchable ones (merges in progress excluded).
    pub chunk_rows: u64,
    /// How the vectors are stored.
    pub storage: VectorStorage,
}

/// How segments are sealed, indexed and merged. One worker at a time applies it (the lease holder's settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentPolicy {
    /// The hot segment is sealed once it holds this many rows: the rows a search scans exactly at most.
    pub seal_rows: u64,
    /// Segments of one size tier merged at once (tier k holds segments of about `seal_rows × factor^k` rows): a
    /// search visits at most `factor - 1` segments per tier, and a row is indexed again once per tier.
    pub merge_factor: usize,
    /// Parameters of every segment's HNSW index.
    pub hnsw: HnswParams,
    /// `maintenance_work_mem` of builds and merges; if `None`, each build gets what its graph needs, up to 1 GB.
    pub maintenance_work_mem: Option<String>,
    /// A hot segment that receives no row for this long is sealed early, if it holds at least
    /// [`SegmentPolicy::quiet_seal_rows`]: after a burst, its rows are searched through an index rather than
    /// scanned exactly by every search. `None`: only when full.
    pub seal_when_quiet: Option<std::time::Duration>,
}

impl Default for SegmentPolicy {
    fn default() -> SegmentPolicy {
        // 2,000 rather than 10,000: the hot segment's exact scan (about 0.5 ms per 1,000 rows) was most of a search's
        // time, and a small segment's index scan costs 0.1-0.2 ms; measured at 105,000 rows, p95 2.35 ms against
        // 6.3-8.1 ms, for 4,789 against 4,840 chunks/s and 0.80 against 0.58 Postgres CPU-s per 1,000 chunks (README).
        SegmentPolicy {
            seal_rows: 2_000,
            merge_factor: 4,
            hnsw: HnswParams::default(),
            maintenance_work_mem: None,
            seal_when_quiet: Some(std::time::Duration::from_secs(30)),
        }
    }
}

impl SegmentPolicy {
    /// Checks what pgvector would refuse and what may reach SQL text, naming `quern index create`'s flag at fault
    /// (`--m`, `--ef-construction`, `--maintenance-work-mem`).
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        self.hnsw.validate()?;
        match &self.maintenance_work_mem {
            // Formatted into a SET statement, so only digits and a unit are accepted.
            Some(memory) if memory.is_empty() || !memory.chars().all(|c| c.is_ascii_alphanumeric()) => {
                Err(InvalidSetting {
                    flag: "--maintenance-work-mem",
                    problem: format!("must be a size such as 512MB or 2GB, got {memory:?}"),
                })
            }
            _ => Ok(()),
        }
    }

    /// The size tier of a segment of `rows` rows: 0 up to `seal_rows × factor`, then one more per factor.
    pub fn tier(&self, rows: u64) -> u32 {
        let factor = self.merge_factor.max(2) as u64;
        let mut bound = self.seal_rows.max(1).saturating_mul(factor);
        let mut tier = 0;
        // A saturated bound would hold every row count: stop there rather than loop.
        while rows >= bound && bound < u64::MAX {
            tier += 1;
            bound = bound.saturating_mul(factor);
        }
        tier
    }
}

impl Store {
    /// Every segment, the index builds running, and who holds the maintenance lease.
    pub async fn segments_status(&self) -> Result<SegmentsStatus, StoreError> {
        self.timed("read the segments", async {
            let client = self.client().await?;
            read_segments_status(&client, maintenance_lease(self.schema())).await
        })
        .await
    }
}

pub(crate) async fn read_segments_status(
    client: &tokio_postgres::Client,
    lease: i64,
) -> Result<SegmentsStatus, StoreError> {
    let rows = client
        .query(
            "SELECT s.segment, s.state, s.merged_from, s.created_at, s.sealed_at, s.indexed_at,
                    coalesce(pg_total_relation_size(t.oid), 0),
                    i.relname::text, x.indisvalid, pg_relation_size(i.oid), pg_get_indexdef(i.oid),
                    (SELECT count(*) FROM quern_chunks c WHERE c.segment = s.segment)
             FROM quern_segments s
             LEFT JOIN pg_class t ON t.oid = to_regclass('quern_chunks_segment_' || s.segment)
             LEFT JOIN pg_class i ON i.oid = to_regclass('quern_chunks_segment_' || s.segment || '_hnsw')
             LEFT JOIN pg_index x ON x.indexrelid = i.oid
             ORDER BY s.segment",
            &[],
        )
        .await
        .map_err(StoreError::db("read the segments"))?;
    let mut segments = Vec::with_capacity(rows.len());
    for row in &rows {
        let state = SegmentState::parse(row.get(1))?;
        let index = row.get::<_, Option<String>>(7).map(|name| SegmentIndex {
            name,
            valid: row.get::<_, Option<bool>>(8).unwrap_or(false),
            size_bytes: row.get::<_, Option<i64>>(9).unwrap_or(0).max(0) as u64,
            definition: row.get::<_, Option<String>>(10).unwrap_or_default(),
        });
        segments.push(Segment {
            id: row.get(0),
            state,
            rows: row.get::<_, i64>(11).max(0) as u64,
            size_bytes: row.get::<_, i64>(6).max(0) as u64,
            index,
            merged_from: row.get::<_, Option<Vec<i64>>>(2).unwrap_or_default(),
            created_at: row.get(3),
            sealed_at: row.get(4),
            indexed_at: row.get(5),
        });
    }
    // A merge's table is not a partition yet, so the count above (through quern_chunks) says nothing of it.
    for segment in segments.iter_mut().filter(|s| s.state == SegmentState::Merging) {
        let table = segment_table(segment.id);
        let exists = client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
            .await
            .map_err(StoreError::db("look up a merge's table"))?;
        if exists.get(0) {
            let counted = client.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await;
            // The merging session may hold it locked while creating it; a count is only for display.
            segment.rows = counted.map(|row| row.get::<_, i64>(0).max(0) as u64).unwrap_or(0);
        }
    }
    let builds = client
        .query(
            "SELECT c.relname::text, p.pid, p.phase, p.tuples_done
             FROM pg_stat_progress_create_index p JOIN pg_class c ON c.oid = p.relid
             WHERE c.relname LIKE 'quern\\_chunks\\_segment\\_%' ORDER BY p.pid",
            &[],
        )
        .await
        .map_err(StoreError::db("read index builds in progress"))?
        .iter()
        .map(|row| SegmentBuild {
            table: row.get(0),
            pid: row.get(1),
            phase: row.get(2),
            tuples_done: row.get::<_, i64>(3).max(0) as u64,
        })
        .collect();
    let maintainer_pid = client
        .query_opt(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND database = (
                 SELECT oid FROM pg_database WHERE datname = current_database())
               AND ((classid::bigint << 32) | objid::bigint) = $1 LIMIT 1",
            &[&lease],
        )
        .await
        .map_err(StoreError::db("read the maintenance lease"))?
        .map(|row| row.get(0));
    let chunk_rows = segments.iter().filter(|s| s.state != SegmentState::Merging).map(|s| s.rows).sum();
    let storage = read_vector_storage(client).await?;
    Ok(SegmentsStatus { segments, builds, maintainer_pid, chunk_rows, storage })
}

#[cfg(test)]
mod tests {
    use super::SegmentPolicy;

    #[test]
    fn tiers_grow_by_the_merge_factor() {
        let policy = SegmentPolicy { seal_rows: 100, merge_factor: 4, ..SegmentPolicy::default() };
        assert_eq!(policy.tier(0), 0);
        assert_eq!(policy.tier(100), 0);
        assert_eq!(policy.tier(399), 0);
        assert_eq!(policy.tier(400), 1);
        assert_eq!(policy.tier(1_599), 1);
        assert_eq!(policy.tier(1_600), 2);
        assert!(policy.tier(u64::MAX) > policy.tier(1_600), "a saturated bound still ends the count");
    }
}
