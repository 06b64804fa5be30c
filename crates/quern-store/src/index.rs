//! The HNSW index on `quern_chunks.embedding`: its state, dropping it before a bulk load, building it after.
//!
//! Keeping the index up to date costs most of Postgres' CPU during ingestion, and one build over the loaded rows is
//! several times cheaper than row-by-row upkeep (pgvector's own advice for a large initial load). Search works
//! either way: without the index, Postgres scans exactly.
//!
//! Drop and build use `CONCURRENTLY`, so workers and searches carry on. They run on a connection taken out of the
//! pool for good: its session settings (no statement timeout, more memory) die with it and can never reach a
//! pooled query, and no client-side operation timeout applies, since a build can take hours.

use std::time::{Duration, Instant};

use deadpool_postgres::{ClientWrapper, Object};
use tokio_postgres::error::SqlState;

use crate::{Store, StoreError};

/// The index created by `migrations/0001_init.sql`.
pub const VECTOR_INDEX_NAME: &str = "quern_chunks_embedding_hnsw";
/// How often a running build's progress is read.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);

/// The vector index as Postgres describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VectorIndex {
    /// The index's name.
    pub name: String,
    /// Its `CREATE INDEX` statement (`pg_indexes.indexdef`), parameters included.
    pub definition: String,
    /// False while a concurrent build runs, and after one failed (`pg_index.indisvalid`): searches ignore it.
    pub valid: bool,
    /// Size on disk.
    pub size_bytes: u64,
}

/// A `CREATE INDEX` running on the vector index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningBuild {
    /// Backend running it (`pg_cancel_backend(pid)` stops it).
    pub pid: i32,
    /// Its phase, as `pg_stat_progress_create_index` names it.
    pub phase: String,
}

/// What `quern index status` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VectorIndexStatus {
    /// `None` once dropped.
    pub index: Option<VectorIndex>,
    /// A build in progress; an invalid index without one is the leftover of a failed build.
    pub running_build: Option<RunningBuild>,
    /// Rows of `quern_chunks`, all of which a build indexes.
    pub chunk_rows: u64,
}

/// pgvector's HNSW build parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HnswParams {
    /// Links per node (pgvector: 2..=100): more means better recall, a larger index and a slower build.
    pub m: u32,
    /// Candidates kept while linking (pgvector: 4..=1000, at least 2 × m): more means better recall, slower build.
    pub ef_construction: u32,
}

impl Default for HnswParams {
    /// pgvector's defaults, which the migration uses.
    fn default() -> HnswParams {
        HnswParams { m: 16, ef_construction: 64 }
    }
}

impl HnswParams {
    /// Checks the ranges pgvector enforces, naming the `quern index create` flag at fault.
    pub fn validate(&self) -> Result<(), IndexError> {
        let invalid = |flag, problem: String| Err(IndexError::InvalidSetting { flag, problem });
        if !(2..=100).contains(&self.m) {
            return invalid("--m", format!("must be between 2 and 100, got {}", self.m));
        }
        if !(4..=1000).contains(&self.ef_construction) {
            return invalid("--ef-construction", format!("must be between 4 and 1000, got {}", self.ef_construction));
        }
        if self.ef_construction < 2 * self.m {
            return invalid(
                "--ef-construction",
                format!("must be at least 2 × --m = {}, got {}", 2 * self.m, self.ef_construction),
            );
        }
        Ok(())
    }
}

/// How to build the index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexBuildSettings {
    /// The index's parameters.
    pub hnsw: HnswParams,
    /// `maintenance_work_mem` of the build (e.g. `1GB`); the server's setting if `None`. pgvector builds fastest
    /// when the graph fits in it.
    pub maintenance_work_mem: Option<String>,
    /// `max_parallel_maintenance_workers` of the build; the server's setting if `None`.
    pub parallel_workers: Option<u32>,
}

impl IndexBuildSettings {
    /// Checks what can be checked without the server (`maintenance_work_mem` is checked by Postgres).
    pub fn validate(&self) -> Result<(), IndexError> {
        self.hnsw.validate()?;
        match self.parallel_workers {
            Some(workers) if workers > 1024 => Err(IndexError::InvalidSetting {
                flag: "--parallel-workers",
                problem: format!("must be at most 1024 (Postgres' limit), got {workers}"),
            }),
            _ => Ok(()),
        }
    }
}

/// A running build's progress, from `pg_stat_progress_create_index`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexBuildProgress {
    /// Postgres' phase name (e.g. `building index: loading tuples`), or `done` for the last report.
    pub phase: String,
    /// Rows indexed so far.
    pub tuples_done: u64,
    /// Rows to index. pgvector's HNSW build does not report it, so while Postgres says 0 it is the rows counted
    /// before the build (rows written meanwhile can take `tuples_done` past it).
    pub tuples_total: u64,
    /// Table blocks read so far.
    pub blocks_done: u64,
    /// Table blocks to read.
    pub blocks_total: u64,
}

/// How [`Store::create_vector_index`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexCreation {
    /// The index was built.
    Created {
        /// The new index.
        index: VectorIndex,
        /// Time spent building it.
        duration: Duration,
        /// An invalid index left by a failed build was dropped first.
        replaced_invalid: bool,
    },
    /// A valid index of that name exists; nothing was done (drop it first to rebuild it).
    AlreadyExists(VectorIndex),
}

/// A failed index operation.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// A build setting out of range, named by its `quern index create` flag.
    #[error("{flag} {problem}")]
    InvalidSetting {
        /// The flag, e.g. `--ef-construction`.
        flag: &'static str,
        /// What is wrong with its value.
        problem: String,
    },
    /// Another session is building the index; dropping or rebuilding it now would undo or wait for that work.
    #[error(
        "the vector index is being built by backend {pid} ({phase}); wait for it, or stop it with \
         pg_cancel_backend({pid})",
        pid = .0.pid,
        phase = .0.phase
    )]
    BuildRunning(RunningBuild),
    /// The build failed; `CREATE INDEX CONCURRENTLY` leaves an invalid index behind, which inserts keep updating.
    #[error("building the vector index failed: {source}{}", if *.invalid_index_left {
        "; an invalid index may be left: `quern index create` replaces it, `quern index drop` removes it"
    } else {
        ""
    })]
    BuildFailed {
        /// Why.
        source: StoreError,
        /// The unfinished index could not be dropped (or its absence checked), e.g. because the connection broke.
        invalid_index_left: bool,
    },
    /// Another session dropped the index as soon as this one had built it.
    #[error("the vector index was built, then at once dropped by another session")]
    DroppedMeanwhile,
    /// Any other database failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Store {
    /// The vector index, if it exists.
    pub async fn vector_index(&self) -> Result<Option<VectorIndex>, StoreError> {
        self.timed("read the vector index", async { read_vector_index(&**self.client().await?).await }).await
    }

    /// The vector index, any build of it in progress, and the rows a build would index.
    pub async fn vector_index_status(&self) -> Result<VectorIndexStatus, StoreError> {
        self.timed("read the vector index status", async {
            let client = self.client().await?;
            let index = read_vector_index(&client).await?;
            let running_build = read_running_build(&client).await?;
            let chunk_rows = count_chunks(&client).await?;
            Ok(VectorIndexStatus { index, running_build, chunk_rows })
        })
        .await
    }

    /// Drops the vector index without blocking writers or searches; returns whether it existed.
    ///
    /// Refused while a build of it runs. Waits for transactions using `quern_chunks` to finish, without a time
    /// limit.
    pub async fn drop_vector_index(&self) -> Result<bool, IndexError> {
        let session = self.maintenance_session().await?;
        if let Some(build) = read_running_build(&session).await? {
            return Err(IndexError::BuildRunning(build));
        }
        let existed = read_vector_index(&session).await?.is_some();
        drop_index(&session).await?;
        Ok(existed)
    }

    /// Builds the vector index with `CREATE INDEX CONCURRENTLY`, without a time limit, calling `progress` about
    /// every 250 ms and once more, with phase `done`, at the end.
    ///
    /// A valid index is left alone ([`IndexCreation::AlreadyExists`]); an invalid one left by a failed build is
    /// dropped first; a build in progress elsewhere is an error. If this build fails, its invalid index is dropped.
    /// Dropping the returned future closes the connection, and Postgres abandons the build within a second.
    pub async fn create_vector_index(
        &self,
        settings: &IndexBuildSettings,
        mut progress: impl FnMut(&IndexBuildProgress) + Send,
    ) -> Result<IndexCreation, IndexError> {
        settings.validate()?;
        let session = self.maintenance_session().await?;
        configure_build(&session, settings).await?;
        if let Some(build) = read_running_build(&session).await? {
            return Err(IndexError::BuildRunning(build));
        }
        let replaced_invalid = match read_vector_index(&session).await? {
            Some(index) if index.valid => return Ok(IndexCreation::AlreadyExists(index)),
            Some(index) => {
                tracing::info!(index = %index.name, "dropping an invalid index left by a failed build");
                drop_index(&session).await?;
                true
            }
            None => false,
        };
        let rows = count_chunks(&session).await?;
        let pid: i32 =
            session.query_one("SELECT pg_backend_pid()", &[]).await.map_err(StoreError::db("read backend pid"))?.get(0);
        let watcher = self.client().await?;

        let started = Instant::now();
        let HnswParams { m, ef_construction } = settings.hnsw;
        // One statement per round trip: several would form an implicit transaction, where CONCURRENTLY is refused.
        // The parameters are validated integers, so formatting them in is safe.
        let statement = format!(
            "CREATE INDEX CONCURRENTLY {VECTOR_INDEX_NAME} ON quern_chunks \
             USING hnsw (embedding vector_cosine_ops) WITH (m = {m}, ef_construction = {ef_construction})"
        );
        let build = session.batch_execute(&statement);
        tokio::pin!(build);
        let mut ticks = tokio::time::interval(PROGRESS_INTERVAL);
        let built = loop {
            tokio::select! {
                result = &mut build => break result,
                _ = ticks.tick() => match read_progress(&watcher, pid, rows).await {
                    Ok(Some(report)) => progress(&report),
                    Ok(None) => {}
                    // Progress is only for display: a failed read must not stop the build.
                    Err(error) => tracing::debug!(%error, "reading index build progress failed"),
                },
            }
        };
        let duration = started.elapsed();
        if let Err(error) = built {
            let source = StoreError::Db { operation: "create the vector index", cause: error };
            let invalid_index_left = !drop_leftover(&session).await;
            return Err(IndexError::BuildFailed { source, invalid_index_left });
        }
        progress(&IndexBuildProgress {
            phase: "done".into(),
            tuples_done: rows,
            tuples_total: rows,
            ..IndexBuildProgress::default()
        });
        let index = read_vector_index(&session).await?.ok_or(IndexError::DroppedMeanwhile)?;
        Ok(IndexCreation::Created { index, duration, replaced_invalid })
    }

    /// A connection of its own for one maintenance command, closed when dropped, with no statement timeout.
    async fn maintenance_session(&self) -> Result<ClientWrapper, StoreError> {
        let session = Object::take(self.client().await?);
        // Without a check, a build whose client went away (ctrl-c) would run on to the end, for nothing.
        session
            .batch_execute("SET statement_timeout = 0; SET client_connection_check_interval = '1s'")
            .await
            .map_err(StoreError::db("configure the maintenance session"))?;
        Ok(session)
    }
}

async fn read_vector_index(client: &tokio_postgres::Client) -> Result<Option<VectorIndex>, StoreError> {
    let row = client
        .query_opt(
            "SELECT c.relname::text, pg_get_indexdef(c.oid), x.indisvalid, pg_relation_size(c.oid)
             FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid
             WHERE x.indexrelid = to_regclass($1)",
            &[&VECTOR_INDEX_NAME],
        )
        .await
        .map_err(StoreError::db("read the vector index"))?;
    Ok(row.map(|row| VectorIndex {
        name: row.get(0),
        definition: row.get(1),
        valid: row.get(2),
        size_bytes: row.get::<_, i64>(3).max(0) as u64,
    }))
}

/// A `CREATE INDEX` of the vector index in another session (an invalid index alone is a failed build's leftover).
async fn read_running_build(client: &tokio_postgres::Client) -> Result<Option<RunningBuild>, StoreError> {
    let row = client
        .query_opt(
            "SELECT pid, phase FROM pg_stat_progress_create_index
             WHERE index_relid = to_regclass($1) AND pid <> pg_backend_pid() LIMIT 1",
            &[&VECTOR_INDEX_NAME],
        )
        .await
        .map_err(StoreError::db("read index builds in progress"))?;
    Ok(row.map(|row| RunningBuild { pid: row.get(0), phase: row.get(1) }))
}

async fn count_chunks(client: &tokio_postgres::Client) -> Result<u64, StoreError> {
    let row =
        client.query_one("SELECT count(*) FROM quern_chunks", &[]).await.map_err(StoreError::db("count chunks"))?;
    Ok(row.get::<_, i64>(0).max(0) as u64)
}

async fn read_progress(
    client: &tokio_postgres::Client,
    pid: i32,
    rows: u64,
) -> Result<Option<IndexBuildProgress>, StoreError> {
    let row = client
        .query_opt(
            "SELECT phase, tuples_done, tuples_total, blocks_done, blocks_total
             FROM pg_stat_progress_create_index WHERE pid = $1",
            &[&pid],
        )
        .await
        .map_err(StoreError::db("read index build progress"))?;
    Ok(row.map(|row| {
        let count = |i| row.get::<_, i64>(i).max(0) as u64;
        let phase: String = row.get(0);
        let reported_total = count(2);
        let tuples_total =
            if reported_total == 0 && phase.starts_with("building index") { rows } else { reported_total };
        IndexBuildProgress { phase, tuples_done: count(1), tuples_total, blocks_done: count(3), blocks_total: count(4) }
    }))
}

async fn configure_build(session: &tokio_postgres::Client, settings: &IndexBuildSettings) -> Result<(), IndexError> {
    if let Some(memory) = &settings.maintenance_work_mem {
        // set_config takes the value as a parameter: nothing the operator types reaches the SQL text.
        let set = session.execute("SELECT set_config('maintenance_work_mem', $1, false)", &[memory]).await;
        if let Err(error) = set {
            if let Some(refusal) = error.as_db_error().filter(|db| *db.code() == SqlState::INVALID_PARAMETER_VALUE) {
                let hint = refusal.hint().map(|hint| format!(" ({hint})")).unwrap_or_default();
                let problem = format!("was refused by Postgres: {}{hint}", refusal.message());
                return Err(IndexError::InvalidSetting { flag: "--maintenance-work-mem", problem });
            }
            return Err(StoreError::Db { operation: "set maintenance_work_mem", cause: error }.into());
        }
    }
    if let Some(workers) = settings.parallel_workers {
        session
            .batch_execute(&format!("SET max_parallel_maintenance_workers = {workers}"))
            .await
            .map_err(StoreError::db("set max_parallel_maintenance_workers"))?;
    }
    Ok(())
}

async fn drop_index(session: &tokio_postgres::Client) -> Result<(), StoreError> {
    // CONCURRENTLY: no lock that would stop writers or searches; it cannot run inside a transaction.
    session
        .batch_execute(&format!("DROP INDEX CONCURRENTLY IF EXISTS {VECTOR_INDEX_NAME}"))
        .await
        .map_err(StoreError::db("drop the vector index"))
}

/// Drops the invalid index a failed build left, if the connection still works; returns whether no invalid index is
/// known to be left.
async fn drop_leftover(session: &tokio_postgres::Client) -> bool {
    match read_vector_index(session).await {
        Ok(Some(index)) if !index.valid => match drop_index(session).await {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(%error, "could not drop the unfinished vector index");
                false
            }
        },
        // Nothing was left (the build failed before creating it), or the index is another session's valid one.
        Ok(_) => true,
        Err(_) => false,
    }
}
