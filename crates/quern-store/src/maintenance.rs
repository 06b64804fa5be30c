//! Segment maintenance: one worker at a time seals the hot segment, builds sealed segments' HNSW indexes in bulk,
//! and merges indexed segments in tiers.
//!
//! The lease is a session advisory lock ([`MAINTENANCE_LEASE`]) on a connection of its own, and every piece of work
//! runs on that same connection: if the worker dies, Postgres ends the session (within a second, as it checks the
//! client), which abandons the build and frees the lease for another worker. Whoever takes the lease first clears
//! what a dead holder left (a half-filled merge table, a detached segment not yet dropped, an invalid index).
//!
//! Why each step is safe while writers and searches carry on:
//! - Sealing takes the switch lock exclusively ([`SEGMENT_SWITCH_LOCK`]), which every writer holds shared from the
//!   moment it reads the hot segment until it commits: once sealed, a segment receives no insert, only deletes.
//! - A build is `CREATE INDEX CONCURRENTLY` on the sealed segment alone: deletes (re-ingests) go on meanwhile.
//! - A merge copies its sources into a table outside `quern_chunks`, indexes it, then removes from it the rows that
//!   writers deleted from the sources meanwhile. The swap takes `quern_chunks` in SHARE mode (writers wait, searches
//!   do not), checks that the copy holds exactly the sources' rows, and detaches the sources and attaches the copy
//!   in one transaction: a search sees either the sources or the copy, never both or neither.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::{ClientWrapper, Object};
use tokio_postgres::error::SqlState;

use crate::index::read_vector_storage;
use crate::segments::{maintenance_lease, segment_index, segment_table, SegmentPolicy, SEGMENT_SWITCH_LOCK};
use crate::{Store, StoreError};

/// Longest the merge swap waits for its locks before giving up until the next step: writers queue behind it.
const SWAP_LOCK_TIMEOUT: &str = "5s";
/// SQLSTATE of a seal that found its segment already sealed by another sealer.
const SEALED_MEANWHILE: &str = "QN001";
/// Most `maintenance_work_mem` a build is given when none is configured. pgvector builds far faster while the graph
/// fits in it (past it, the rest is inserted as row-by-row upkeep would), and a parallel build reserves all of it in
/// shared memory at once, so each build gets what its graph needs, within this.
const AUTO_MAINTENANCE_MEMORY_MAX_MB: u64 = 1024;
/// Bytes of an HNSW graph per row besides its vector: neighbour lists of `m = 16` and the element's header.
const GRAPH_BYTES_PER_ROW: u64 = 512;

/// One piece of maintenance done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaintenanceStep {
    /// What a dead lease holder left was cleared.
    Recovered {
        /// Tables dropped (half-built merges, detached segments).
        dropped_tables: Vec<String>,
        /// Segments whose index was missing or invalid, set back to sealed to be built again.
        unindexed: Vec<i64>,
    },
    /// The hot segment was sealed and a new one turned hot.
    Sealed {
        /// The segment sealed.
        segment: i64,
        /// Its rows.
        rows: u64,
        /// The new hot segment.
        next: i64,
    },
    /// A sealed segment's HNSW index was built.
    Built {
        /// The segment.
        segment: i64,
        /// How long the build took.
        duration: Duration,
        /// An invalid index left by an interrupted build was dropped first.
        replaced_invalid: bool,
    },
    /// An indexed segment left without rows (the migration's first one on a new database, or one whose rows were
    /// all replaced) was detached and dropped rather than merged.
    Dropped {
        /// The segment.
        segment: i64,
    },
    /// Indexed segments were merged into one, indexed and swapped in.
    Merged {
        /// The segments replaced.
        from: Vec<i64>,
        /// The new segment.
        into: i64,
        /// Its rows.
        rows: u64,
        /// How long copying, indexing and swapping took.
        duration: Duration,
    },
}

/// Seals the hot segment of a [`Maintainer`] that holds the lease, beside it (see [`Maintainer::sealer`]).
#[derive(Debug, Clone)]
pub struct Sealer {
    store: Store,
    seal_rows: u64,
    seal_when_quiet: Option<Duration>,
    lease: Arc<AtomicBool>,
    /// The hot segment and its row count when last seen to change.
    quiet: Option<(i64, u64, Instant)>,
}

impl Sealer {
    /// Seals the hot segment if the maintainer holds the lease and the segment is full, or has been quiet (the
    /// same row count) for the policy's `seal_when_quiet` with at least [`SegmentPolicy::quiet_seal_rows`] rows;
    /// `Ok(None)` otherwise. Called every fraction of a second.
    pub async fn seal_if_due(&mut self) -> Result<Option<MaintenanceStep>, StoreError> {
        if !self.lease.load(Ordering::Acquire) {
            self.quiet = None;
            return Ok(None);
        }
        let client = self.store.client().await?;
        let (hot, rows) = read_hot(&client, self.seal_rows).await?;
        if rows >= self.seal_rows.max(1) {
            self.quiet = None;
            return seal_segment(&client, hot).await;
        }
        let Some(quiet_for) = self.seal_when_quiet else { return Ok(None) };
        match self.quiet {
            Some((seen, count, since)) if seen == hot && count == rows => {
                if rows >= quiet_seal_rows(self.seal_rows) && since.elapsed() >= quiet_for {
                    self.quiet = None;
                    return seal_segment(&client, hot).await;
                }
            }
            _ => self.quiet = Some((hot, rows, Instant::now())),
        }
        Ok(None)
    }
}

/// See [`SegmentPolicy::quiet_seal_rows`].
fn quiet_seal_rows(seal_rows: u64) -> u64 {
    (seal_rows / 10).max(1)
}

impl SegmentPolicy {
    /// Rows from which a quiet hot segment is sealed: a tenth of `seal_rows`, about where its exact scan costs as
    /// much as one more index scan would (measured at dimension 384: 0.7 ms per 1,000 rows scanned exactly, 0.4-1
    /// ms per HNSW scan).
    pub fn quiet_seal_rows(&self) -> u64 {
        quiet_seal_rows(self.seal_rows)
    }
}

/// A merge whose table is built but whose swap could not take its locks in time.
#[derive(Debug, Clone)]
struct PendingSwap {
    into: i64,
    from: Vec<i64>,
    started: Instant,
}

/// A worker's side of segment maintenance: takes the lease when it is free, then works one step at a time.
pub struct Maintainer {
    store: Store,
    policy: SegmentPolicy,
    session: Option<ClientWrapper>,
    /// Shared with its [`Sealer`]s, which seal only while it is set.
    holds_lease: Arc<AtomicBool>,
    recovered: bool,
    pending_swap: Option<PendingSwap>,
}

impl std::fmt::Debug for Maintainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Maintainer")
            .field("policy", &self.policy)
            .field("holds_lease", &self.holds_lease())
            .finish_non_exhaustive()
    }
}

impl Maintainer {
    /// A maintainer applying `policy`; it holds nothing until [`Maintainer::acquire`].
    pub fn new(store: Store, policy: SegmentPolicy) -> Maintainer {
        let holds_lease = Arc::new(AtomicBool::new(false));
        Maintainer { store, policy, session: None, holds_lease, recovered: false, pending_swap: None }
    }

    /// Whether this maintainer holds the lease.
    pub fn holds_lease(&self) -> bool {
        self.holds_lease.load(Ordering::Acquire)
    }

    /// A sealer that seals the hot segment as soon as it is full, while this maintainer holds the lease, on a
    /// connection of its own: so that the hot segment stays small while a long build or merge runs here.
    pub fn sealer(&self) -> Sealer {
        Sealer {
            store: self.store.clone(),
            seal_rows: self.policy.seal_rows,
            seal_when_quiet: self.policy.seal_when_quiet,
            lease: self.holds_lease.clone(),
            quiet: None,
        }
    }

    /// A pruner that deletes what `policy` lets go (finished jobs, old tombstones) while this maintainer holds the
    /// lease, on pool connections of its own, recording its runs as `pruned_by`: see [`crate::retention`].
    pub fn pruner(&self, policy: crate::RetentionPolicy, pruned_by: &str) -> crate::Pruner {
        crate::Pruner {
            store: self.store.clone(),
            policy,
            pruned_by: pruned_by.to_owned(),
            lease: self.holds_lease.clone(),
        }
    }

    /// Takes the lease if no one holds it; returns whether this maintainer holds it. Never waits.
    pub async fn acquire(&mut self) -> Result<bool, StoreError> {
        if self.holds_lease() {
            return Ok(true);
        }
        let lease = maintenance_lease(self.store.schema());
        let session = self.session().await?;
        let row = session
            .query_one("SELECT pg_try_advisory_lock($1)", &[&lease])
            .await
            .map_err(StoreError::db("take the maintenance lease"));
        let held = match row {
            Ok(row) => row.get(0),
            Err(error) => return Err(self.lost(error)),
        };
        if held {
            tracing::info!("took the segment maintenance lease");
        }
        self.holds_lease.store(held, Ordering::Release);
        Ok(held)
    }

    /// Does the next piece of maintenance, if any is due: first (after taking the lease) clearing what a dead
    /// holder left, then sealing a full hot segment, building the oldest sealed segment's index, merging a tier.
    /// `Ok(None)` when nothing is due or another worker holds the lease. A failed step loses the lease (the
    /// connection is closed, abandoning any build); the next call starts again from a new connection.
    pub async fn step(&mut self) -> Result<Option<MaintenanceStep>, StoreError> {
        if !self.acquire().await? {
            return Ok(None);
        }
        let outcome = self.step_holding_lease().await;
        outcome.map_err(|error| self.lost(error))
    }

    /// Runs steps until none is due; returns them in order.
    pub async fn run_until_idle(&mut self) -> Result<Vec<MaintenanceStep>, StoreError> {
        let mut steps = Vec::new();
        while let Some(step) = self.step().await? {
            steps.push(step);
        }
        Ok(steps)
    }

    /// Seals the hot segment now, whatever its size, if it holds a row and this maintainer holds the lease: for
    /// `quern index create --seal` and tests. The next steps build its index.
    pub async fn seal_now(&mut self) -> Result<Option<MaintenanceStep>, StoreError> {
        if !self.acquire().await? {
            return Ok(None);
        }
        let outcome = self.seal(1).await;
        outcome.map_err(|error| self.lost(error))
    }

    /// Gives the lease up: cancels a statement still running on its connection (a build abandoned mid-way, when
    /// a step's future was dropped) and closes the connection. Dropping the maintainer instead leaves a running
    /// build to finish first, since the driver waits for its answer before closing.
    pub async fn release(&mut self) {
        if let Some(session) = &self.session {
            // A cancel request on an idle connection does nothing; one that fails leaves the build to finish.
            if let Err(error) = session.cancel_token().cancel_query(self.store.tls_connector()).await {
                tracing::debug!(%error, "could not cancel the maintenance statement");
            }
        }
        self.forget();
    }

    /// Forgets the connection (and so the lease) without cancelling anything.
    fn forget(&mut self) {
        self.session = None;
        self.holds_lease.store(false, Ordering::Release);
        self.recovered = false;
        self.pending_swap = None;
    }

    async fn step_holding_lease(&mut self) -> Result<Option<MaintenanceStep>, StoreError> {
        if !self.recovered {
            self.recovered = true;
            if let Some(step) = self.recover().await? {
                return Ok(Some(step));
            }
        }
        if let Some(pending) = self.pending_swap.take() {
            return self.finish_merge(pending).await;
        }
        if let Some(step) = self.seal(self.policy.seal_rows).await? {
            return Ok(Some(step));
        }
        if let Some(step) = self.build().await? {
            return Ok(Some(step));
        }
        if let Some(step) = self.drop_empty().await? {
            return Ok(Some(step));
        }
        self.merge().await
    }

    /// The lease's connection, opened (and configured for long work) if needed.
    async fn session(&mut self) -> Result<&ClientWrapper, StoreError> {
        if self.session.is_none() {
            let session = Object::take(self.store.client().await?);
            // Without the check, a build whose worker died would run on to its end, holding the lease.
            let mut setup = String::from(
                "SET statement_timeout = 0; SET client_connection_check_interval = '1s'; \
                 SET application_name = 'quern maintenance'",
            );
            if let Some(memory) = &self.policy.maintenance_work_mem {
                // Only digits and a unit may reach the SQL text.
                self.policy.validate().map_err(|error| StoreError::Config(error.to_string()))?;
                setup.push_str(&format!("; SET maintenance_work_mem = '{memory}'"));
            }
            session.batch_execute(&setup).await.map_err(StoreError::db("configure the maintenance session"))?;
            self.session = Some(session);
        }
        Ok(self.session.as_ref().expect("just opened"))
    }

    /// Forgets the connection (and so the lease) after a failure.
    fn lost(&mut self, error: StoreError) -> StoreError {
        if self.holds_lease() {
            tracing::warn!(%error, "segment maintenance failed; giving the lease up");
        }
        self.forget();
        error
    }

    fn client(&self) -> &tokio_postgres::Client {
        self.session.as_ref().expect("a step runs with the lease's session")
    }

    /// Sizes `maintenance_work_mem` for a graph of `rows` rows, unless it is configured.
    async fn size_memory(&self, rows: u64) -> Result<(), StoreError> {
        if self.policy.maintenance_work_mem.is_some() {
            return Ok(());
        }
        let client = self.client();
        let dimension: i32 = client
            .query_one(
                "SELECT atttypmod FROM pg_attribute WHERE attrelid = 'quern_chunks'::regclass AND attname = 'embedding'",
                &[],
            )
            .await
            .map_err(StoreError::db("read the vector dimension"))?
            .get(0);
        let per_row = u64::try_from(dimension.max(1)).unwrap_or(1) * 4 + GRAPH_BYTES_PER_ROW;
        // A quarter more than the estimate, in megabytes.
        let megabytes = ((rows.saturating_mul(per_row) / 4 * 5) >> 20).clamp(64, AUTO_MAINTENANCE_MEMORY_MAX_MB);
        client
            .batch_execute(&format!("SET maintenance_work_mem = '{megabytes}MB'"))
            .await
            .map_err(StoreError::db("size maintenance_work_mem"))
    }

    async fn recover(&mut self) -> Result<Option<MaintenanceStep>, StoreError> {
        let client = self.client();
        let mut dropped_tables = Vec::new();
        let merges = client
            .query("DELETE FROM quern_segments WHERE state = 'merging' RETURNING segment", &[])
            .await
            .map_err(StoreError::db("clear unfinished merges"))?;
        for row in merges {
            let table = segment_table(row.get(0));
            let existed = client
                .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
                .await
                .map_err(StoreError::db("look up a merge's table"))?;
            if existed.get(0) {
                drop_table(client, &table).await?;
                dropped_tables.push(table);
            }
        }
        // A source detached by a merge that committed, whose holder died before dropping it.
        let orphans = client
            .query(
                "SELECT c.relname::text FROM pg_class c
                 WHERE c.relkind = 'r' AND NOT c.relispartition AND c.relname ~ '^quern_chunks_segment_[0-9]+$'
                   AND c.relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = to_regclass('quern_chunks'))",
                &[],
            )
            .await
            .map_err(StoreError::db("look for detached segments"))?;
        for row in orphans {
            let table: String = row.get(0);
            drop_table(client, &table).await?;
            dropped_tables.push(table);
        }
        let unindexed: Vec<i64> = client
            .query(
                "UPDATE quern_segments s SET state = 'sealed', indexed_at = NULL
                 WHERE s.state = 'indexed' AND NOT coalesce((SELECT x.indisvalid FROM pg_index x
                     WHERE x.indexrelid = to_regclass('quern_chunks_segment_' || s.segment || '_hnsw')), false)
                 RETURNING s.segment",
                &[],
            )
            .await
            .map_err(StoreError::db("check the segments' indexes"))?
            .iter()
            .map(|row| row.get(0))
            .collect();
        if dropped_tables.is_empty() && unindexed.is_empty() {
            return Ok(None);
        }
        tracing::info!(?dropped_tables, ?unindexed, "cleared what an earlier maintainer left");
        Ok(Some(MaintenanceStep::Recovered { dropped_tables, unindexed }))
    }

    async fn seal(&mut self, min_rows: u64) -> Result<Option<MaintenanceStep>, StoreError> {
        seal_if_full(self.client(), min_rows).await
    }

    /// Builds the HNSW index of the oldest sealed segment.
    async fn build(&mut self) -> Result<Option<MaintenanceStep>, StoreError> {
        let client = self.client();
        let Some(row) = client
            .query_opt(
                "SELECT segment, coalesce(row_count, 0) FROM quern_segments WHERE state = 'sealed'
                 ORDER BY segment LIMIT 1",
                &[],
            )
            .await
            .map_err(StoreError::db("find a sealed segment"))?
        else {
            return Ok(None);
        };
        let segment: i64 = row.get(0);
        self.size_memory(row.get::<_, i64>(1).max(0) as u64).await?;
        let client = self.client();
        let index = segment_index(segment);
        let started = Instant::now();
        let existing: Option<bool> = client
            .query_opt("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass($1)", &[&index])
            .await
            .map_err(StoreError::db("read a segment's index"))?
            .map(|row| row.get(0));
        let replaced_invalid = existing == Some(false);
        if replaced_invalid {
            // Left by a build that was interrupted; inserts would keep updating it, searches ignore it.
            client
                .batch_execute(&format!("DROP INDEX CONCURRENTLY IF EXISTS {index}"))
                .await
                .map_err(StoreError::db("drop an unfinished segment index"))?;
        }
        if existing != Some(true) {
            let hnsw = self.policy.hnsw;
            // The parameters are validated integers, so formatting them in is safe.
            hnsw.validate().map_err(|error| StoreError::Config(error.to_string()))?;
            let opclass = read_vector_storage(client).await?.cosine_opclass();
            client
                .batch_execute(&format!(
                    "CREATE INDEX CONCURRENTLY {index} ON {table} USING hnsw (embedding {opclass}) \
                     WITH (m = {m}, ef_construction = {ef})",
                    table = segment_table(segment),
                    m = hnsw.m,
                    ef = hnsw.ef_construction
                ))
                .await
                .map_err(StoreError::db("build a segment's index"))?;
        }
        client
            .execute("UPDATE quern_segments SET state = 'indexed', indexed_at = now() WHERE segment = $1", &[&segment])
            .await
            .map_err(StoreError::db("mark a segment indexed"))?;
        let duration = started.elapsed();
        tracing::info!(segment, ?duration, replaced_invalid, "built a segment's index");
        Ok(Some(MaintenanceStep::Built { segment, duration, replaced_invalid }))
    }

    /// Detaches and drops an indexed segment recorded with no rows, if it still has none (a sealed segment receives
    /// no insert, so it never will). On a lock timeout, leaves it for a later step.
    async fn drop_empty(&mut self) -> Result<Option<MaintenanceStep>, StoreError> {
        let client = self.client();
        let candidates: Vec<i64> = client
            .query("SELECT segment FROM quern_segments WHERE state = 'indexed' AND row_count = 0 ORDER BY segment", &[])
            .await
            .map_err(StoreError::db("find empty segments"))?
            .iter()
            .map(|row| row.get(0))
            .collect();
        for segment in candidates {
            let table = segment_table(segment);
            let empty: bool = client
                .query_one(&format!("SELECT NOT EXISTS (SELECT 1 FROM {table})"), &[])
                .await
                .map_err(StoreError::db("look into an empty segment"))?
                .get(0);
            if !empty {
                // Rows came from an application writing them itself as the segment was sealed: merged as usual.
                client
                    .execute(
                        &format!(
                            "UPDATE quern_segments SET row_count = (SELECT count(*) FROM {table}) WHERE segment = $1"
                        ),
                        &[&segment],
                    )
                    .await
                    .map_err(StoreError::db("count a segment"))?;
                continue;
            }
            let detached = client
                .batch_execute(&format!(
                    "BEGIN; SET LOCAL lock_timeout = '{SWAP_LOCK_TIMEOUT}';
                     ALTER TABLE quern_chunks DETACH PARTITION {table};
                     DELETE FROM quern_segments WHERE segment = {segment};
                     COMMIT"
                ))
                .await;
            if let Err(error) = detached {
                let _ = client.batch_execute("ROLLBACK").await;
                if error.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) {
                    return Ok(None);
                }
                return Err(StoreError::Db { operation: "detach an empty segment", cause: error });
            }
            drop_table(client, &table).await?;
            tracing::info!(segment, "dropped an empty segment");
            return Ok(Some(MaintenanceStep::Dropped { segment }));
        }
        Ok(None)
    }

    /// Merges the oldest `merge_factor` indexed segments of the smallest tier that has that many.
    async fn merge(&mut self) -> Result<Option<MaintenanceStep>, StoreError> {
        let factor = self.policy.merge_factor.max(2);
        let client = self.client();
        let indexed: Vec<(i64, u64)> = client
            .query(
                "SELECT segment, coalesce(row_count, 0) FROM quern_segments WHERE state = 'indexed' ORDER BY segment",
                &[],
            )
            .await
            .map_err(StoreError::db("read the indexed segments"))?
            .iter()
            .map(|row| (row.get(0), row.get::<_, i64>(1).max(0) as u64))
            .collect();
        let mut tiers: std::collections::BTreeMap<u32, Vec<i64>> = std::collections::BTreeMap::new();
        for &(segment, rows) in &indexed {
            tiers.entry(self.policy.tier(rows)).or_default().push(segment);
        }
        let Some(from) = tiers.into_values().find(|segments| segments.len() >= factor) else {
            return Ok(None);
        };
        let from: Vec<i64> = from.into_iter().take(factor).collect();
        let rows: u64 = indexed.iter().filter(|(segment, _)| from.contains(segment)).map(|(_, rows)| rows).sum();
        self.size_memory(rows).await?;
        let client = self.client();
        let started = Instant::now();
        let into: i64 = client
            .query_one(
                "INSERT INTO quern_segments (segment, state, merged_from)
                 VALUES (nextval('quern_segment_ids'), 'merging', $1) RETURNING segment",
                &[&from],
            )
            .await
            .map_err(StoreError::db("record a merge"))?
            .get(0);
        let table = segment_table(into);
        let sources = id_list(&from);
        let hnsw = self.policy.hnsw;
        hnsw.validate().map_err(|error| StoreError::Config(error.to_string()))?;
        let opclass = read_vector_storage(client).await?.cosine_opclass();
        tracing::info!(?from, into, "merging segments");
        // Indexes after the copy: one bulk build each instead of upkeep row by row.
        client
            .batch_execute(&format!(
                "CREATE TABLE {table} (LIKE quern_chunks);
                 INSERT INTO {table} (collection, document_id, chunk_index, content, content_sha256, embedding, segment)
                     SELECT collection, document_id, chunk_index, content, content_sha256, embedding, {into}
                     FROM quern_chunks WHERE segment IN ({sources});
                 ALTER TABLE {table} ADD CONSTRAINT {table}_bound CHECK (segment = {into});
                 CREATE INDEX {table}_document_content ON {table} (collection, document_id, content_sha256);
                 CREATE INDEX {index} ON {table} USING hnsw (embedding {opclass})
                     WITH (m = {m}, ef_construction = {ef});",
                index = segment_index(into),
                m = hnsw.m,
                ef = hnsw.ef_construction
            ))
            .await
            .map_err(StoreError::db("copy and index a merge"))?;
        self.finish_merge(PendingSwap { into, from, started }).await
    }

    /// Brings a built merge up to date with its sources and swaps it in; on a lock timeout, keeps it for the
    /// next step.
    async fn finish_merge(&mut self, pending: PendingSwap) -> Result<Option<MaintenanceStep>, StoreError> {
        let client = self.client();
        let table = segment_table(pending.into);
        let sources = id_list(&pending.from);
        // Rows writers deleted from the sources since the copy (sealed segments receive no inserts): most of the
        // catching up happens here, outside the swap's lock.
        let catch_up = format!(
            "DELETE FROM {table} m WHERE NOT EXISTS (
                 SELECT 1 FROM quern_chunks s WHERE s.segment IN ({sources}) AND s.collection = m.collection
                   AND s.document_id = m.document_id AND s.chunk_index = m.chunk_index
                   AND s.content_sha256 = m.content_sha256)"
        );
        client.batch_execute(&catch_up).await.map_err(StoreError::db("bring a merge up to date"))?;
        let detach: String = pending
            .from
            .iter()
            .map(|id| format!("ALTER TABLE quern_chunks DETACH PARTITION {};", segment_table(*id)))
            .collect();
        // Inserts into a sealed segment come only from an application writing rows itself at the instant of a
        // seal; they are copied over rather than lost.
        let stragglers = format!(
            "INSERT INTO {table} (collection, document_id, chunk_index, content, content_sha256, embedding, segment)
             SELECT collection, document_id, chunk_index, content, content_sha256, embedding, {into}
             FROM quern_chunks s WHERE s.segment IN ({sources}) AND NOT EXISTS (
                 SELECT 1 FROM {table} m WHERE s.collection = m.collection AND s.document_id = m.document_id
                   AND s.chunk_index = m.chunk_index AND s.content_sha256 = m.content_sha256)",
            into = pending.into
        );
        client.batch_execute("BEGIN").await.map_err(StoreError::db("begin the merge swap"))?;
        let swapped = async {
            client
                .batch_execute(&format!(
                    "SET LOCAL lock_timeout = '{SWAP_LOCK_TIMEOUT}'; LOCK TABLE quern_chunks IN SHARE MODE"
                ))
                .await?;
            let counts = client
                .query_one(
                    &format!(
                        "SELECT (SELECT count(*) FROM quern_chunks WHERE segment IN ({sources})),
                                (SELECT count(*) FROM {table})"
                    ),
                    &[],
                )
                .await?;
            let (source_rows, merged_rows): (i64, i64) = (counts.get(0), counts.get(1));
            if source_rows != merged_rows {
                client.batch_execute(&catch_up).await?;
                client.batch_execute(&stragglers).await?;
            }
            client
                .batch_execute(&format!(
                    "{detach}
                     ALTER TABLE quern_chunks ATTACH PARTITION {table} FOR VALUES IN ({into});
                     UPDATE quern_segments SET state = 'indexed', row_count = {source_rows}, sealed_at = now(),
                         indexed_at = now() WHERE segment = {into};
                     DELETE FROM quern_segments WHERE segment IN ({sources});
                     COMMIT",
                    into = pending.into
                ))
                .await?;
            Ok::<i64, tokio_postgres::Error>(source_rows)
        }
        .await;
        let rows = match swapped {
            Ok(rows) => rows,
            Err(error) => {
                // A failed statement leaves the transaction aborted; if the connection broke, the step fails below.
                let _ = client.batch_execute("ROLLBACK").await;
                if error.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) {
                    tracing::info!(into = pending.into, "the merge swap waited too long for its locks; retrying");
                    self.pending_swap = Some(pending);
                    return Ok(None);
                }
                return Err(StoreError::Db { operation: "swap a merge in", cause: error });
            }
        };
        for id in &pending.from {
            drop_table(client, &segment_table(*id)).await?;
        }
        let duration = pending.started.elapsed();
        tracing::info!(from = ?pending.from, into = pending.into, rows, ?duration, "merged segments");
        Ok(Some(MaintenanceStep::Merged { from: pending.from, into: pending.into, rows: rows.max(0) as u64, duration }))
    }
}

/// Seals the hot segment if it holds at least `min_rows` rows (and one at least).
async fn seal_if_full(client: &tokio_postgres::Client, min_rows: u64) -> Result<Option<MaintenanceStep>, StoreError> {
    let (hot, rows) = read_hot(client, min_rows).await?;
    if rows < min_rows.max(1) {
        return Ok(None);
    }
    seal_segment(client, hot).await
}

/// The hot segment and its rows, counted no further than `count_limit` (the hot segment is small, but a count is
/// still not free).
async fn read_hot(client: &tokio_postgres::Client, count_limit: u64) -> Result<(i64, u64), StoreError> {
    let hot: i64 = client
        .query_one("SELECT segment FROM quern_segments WHERE state = 'hot'", &[])
        .await
        .map_err(StoreError::db("read the hot segment"))?
        .get(0);
    Ok((hot, count_up_to(client, &segment_table(hot), count_limit).await?))
}

/// Seals segment `hot` and makes a new hot segment, in one transaction. Safe beside another sealer: under the switch
/// lock it checks the segment is still the hot one.
async fn seal_segment(client: &tokio_postgres::Client, hot: i64) -> Result<Option<MaintenanceStep>, StoreError> {
    let next: i64 = client
        .query_one("SELECT nextval('quern_segment_ids')", &[])
        .await
        .map_err(StoreError::db("number a new segment"))?
        .get(0);
    let table = segment_table(next);
    // CREATE TABLE … PARTITION OF would lock quern_chunks against searches; ATTACH of an empty table with a check
    // proving its bound takes only a lock that writers and searches pass. The switch lock comes last, so writers
    // wait only for the two catalog updates.
    let sealed = in_transaction(
        client,
        &format!(
            "CREATE TABLE {table} (LIKE quern_chunks);
             ALTER TABLE {table} ADD CONSTRAINT {table}_bound CHECK (segment = {next});
             ALTER TABLE quern_chunks ATTACH PARTITION {table} FOR VALUES IN ({next});
             DO $$ BEGIN
                 PERFORM pg_advisory_xact_lock({SEGMENT_SWITCH_LOCK});
                 UPDATE quern_segments SET state = 'sealed', sealed_at = now(),
                     row_count = (SELECT count(*) FROM {hot_table})
                 WHERE segment = {hot} AND state = 'hot';
                 IF NOT FOUND THEN
                     RAISE EXCEPTION 'segment {hot} was sealed meanwhile' USING ERRCODE = '{SEALED_MEANWHILE}';
                 END IF;
                 INSERT INTO quern_segments (segment, state) VALUES ({next}, 'hot');
             END $$;",
            hot_table = segment_table(hot)
        ),
        "seal the hot segment",
    )
    .await;
    match sealed {
        Err(StoreError::Db { cause, .. }) if cause.code().is_some_and(|code| code.code() == SEALED_MEANWHILE) => {
            return Ok(None)
        }
        other => other?,
    }
    let rows: i64 = client
        .query_one("SELECT row_count FROM quern_segments WHERE segment = $1", &[&hot])
        .await
        .map_err(StoreError::db("read a sealed segment"))?
        .get(0);
    tracing::info!(segment = hot, rows, next, "sealed the hot segment");
    Ok(Some(MaintenanceStep::Sealed { segment: hot, rows: rows.max(0) as u64, next }))
}

/// Runs `statements` in one transaction, rolled back if any fails.
async fn in_transaction(
    client: &tokio_postgres::Client,
    statements: &str,
    operation: &'static str,
) -> Result<(), StoreError> {
    let outcome = client.batch_execute(&format!("BEGIN; {statements} COMMIT")).await;
    if let Err(cause) = outcome {
        let _ = client.batch_execute("ROLLBACK").await;
        return Err(StoreError::Db { operation, cause });
    }
    Ok(())
}

/// Rows of `table`, counting no further than `limit`.
async fn count_up_to(client: &tokio_postgres::Client, table: &str, limit: u64) -> Result<u64, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let row = client
        .query_one(&format!("SELECT count(*) FROM (SELECT 1 FROM {table} LIMIT $1) AS rows"), &[&limit])
        .await
        .map_err(StoreError::db("count the hot segment"))?;
    Ok(row.get::<_, i64>(0).max(0) as u64)
}

async fn drop_table(client: &tokio_postgres::Client, table: &str) -> Result<(), StoreError> {
    client.batch_execute(&format!("DROP TABLE IF EXISTS {table}")).await.map_err(StoreError::db("drop a segment table"))
}

/// `1, 2, 3` for an `IN (…)` list of segment numbers (integers, so formatting them in is safe).
fn id_list(ids: &[i64]) -> String {
    ids.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
}
