//! Applying `migrations/*.sql` in order, once each, safely from several processes at once.

use quern_core::digest::content_sha256 as checksum;
use tokio_postgres::Transaction;

use crate::{Store, StoreError, VectorStorage};

/// One SQL file of `migrations/`.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Order of application; the file name starts with it.
    pub version: i32,
    /// Short name, the rest of the file name.
    pub name: &'static str,
    /// The SQL, with `{{dimension}}` standing for the embedding dimension and `{{vector_storage}}` for the
    /// storage chosen for new tables.
    pub sql: &'static str,
}

/// Every migration, in order. A test checks this list matches the files in `migrations/`.
pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "init", sql: include_str!("../../../migrations/0001_init.sql") },
    Migration {
        version: 2,
        name: "document_versions",
        sql: include_str!("../../../migrations/0002_document_versions.sql"),
    },
    Migration {
        version: 3,
        name: "job_queue_prefix",
        sql: include_str!("../../../migrations/0003_job_queue_prefix.sql"),
    },
    Migration { version: 4, name: "chunk_segments", sql: include_str!("../../../migrations/0004_chunk_segments.sql") },
    Migration { version: 5, name: "vector_storage", sql: include_str!("../../../migrations/0005_vector_storage.sql") },
    Migration { version: 6, name: "retention", sql: include_str!("../../../migrations/0006_retention.sql") },
];

/// Serialises migrators (any value unlikely to collide with an application's own advisory locks).
const MIGRATION_LOCK: i64 = 0x7175_6572_6e5f_6d67; // "quern_mg"

/// What a migration run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// Versions applied by this run.
    pub applied: Vec<i32>,
    /// Versions found already applied.
    pub already_applied: Vec<i32>,
}

impl Store {
    /// Applies every pending migration with `dimension` as the vector size and `vector` storage for new tables,
    /// then checks the existing column has that dimension. Idempotent; concurrent callers wait for each other.
    pub async fn migrate(&self, dimension: usize) -> Result<MigrationReport, StoreError> {
        self.migrate_with_storage(dimension, VectorStorage::Vector).await
    }

    /// [`Store::migrate`], creating the chunk table with `storage` if it does not hold chunks yet. A database
    /// whose table already exists keeps its storage ([`Store::vector_storage`] tells which), and a warning says
    /// so when it differs.
    pub async fn migrate_with_storage(
        &self,
        dimension: usize,
        storage: VectorStorage,
    ) -> Result<MigrationReport, StoreError> {
        let report = self
            .timed("migrate", async {
                let mut client = self.client().await?;
                let mut report = MigrationReport { applied: Vec::new(), already_applied: Vec::new() };
                {
                    let tx = client.transaction().await.map_err(StoreError::db("begin"))?;
                    lock(&tx).await?;
                    if let Some(schema) = self.schema() {
                        // Checked when the store was built: letters, digits and `_` only. pgvector goes where it
                        // would go without a schema of ours (`public`) when the database has none yet: in ours,
                        // the default schema's tables could not find it.
                        tx.batch_execute(&format!(
                            "CREATE EXTENSION IF NOT EXISTS vector SCHEMA public; CREATE SCHEMA IF NOT EXISTS {schema}"
                        ))
                        .await
                        .map_err(StoreError::db("create the database schema"))?;
                    }
                    tx.batch_execute(
                        "CREATE TABLE IF NOT EXISTS quern_schema_migrations (
                         version    integer     PRIMARY KEY,
                         name       text        NOT NULL,
                         checksum   text        NOT NULL,
                         applied_at timestamptz NOT NULL DEFAULT now()
                     )",
                    )
                    .await
                    .map_err(StoreError::db("create quern_schema_migrations"))?;
                    tx.commit().await.map_err(StoreError::db("commit"))?;
                }
                for migration in MIGRATIONS {
                    let tx = client.transaction().await.map_err(StoreError::db("begin"))?;
                    lock(&tx).await?;
                    let row = tx
                        .query_opt(
                            "SELECT checksum FROM quern_schema_migrations WHERE version = $1",
                            &[&migration.version],
                        )
                        .await
                        .map_err(StoreError::db("read quern_schema_migrations"))?;
                    let expected = checksum(migration.sql);
                    match row {
                        Some(row) => {
                            let found: String = row.get(0);
                            if found != expected {
                                return Err(StoreError::MigrationChanged {
                                    version: migration.version,
                                    name: migration.name,
                                });
                            }
                            report.already_applied.push(migration.version);
                        }
                        None => {
                            let sql = migration
                                .sql
                                .replace("{{dimension}}", &dimension.to_string())
                                .replace("{{vector_storage}}", storage.type_name());
                            tx.batch_execute(&sql).await.map_err(StoreError::db("apply migration"))?;
                            tx.execute(
                                "INSERT INTO quern_schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                                &[&migration.version, &migration.name, &expected],
                            )
                            .await
                            .map_err(StoreError::db("record migration"))?;
                            report.applied.push(migration.version);
                            tracing::info!(version = migration.version, name = migration.name, "applied migration");
                        }
                    }
                    tx.commit().await.map_err(StoreError::db("commit migration"))?;
                }
                Ok(report)
            })
            .await?;
        self.check_dimension(dimension).await?;
        let existing = self.vector_storage().await?;
        if existing != storage {
            tracing::warn!(
                configured = %storage,
                existing = %existing,
                "quern_chunks already stores its vectors as {existing}: the storage is chosen when the table is \
                 created, and this database keeps {existing} (docs/segments.md says how to convert it)"
            );
        }
        Ok(report)
    }

    /// How `quern_chunks.embedding` stores its vectors, read from the catalog.
    pub async fn vector_storage(&self) -> Result<VectorStorage, StoreError> {
        self.timed("read vector storage", async {
            let client = self.client().await?;
            crate::index::read_vector_storage(&client).await
        })
        .await
    }

    /// Fails with [`StoreError::SchemaBehind`] when a migration of this build has not been applied. Migrations
    /// newer than this build (a database already migrated by a later release) are fine: they only add.
    pub async fn check_schema(&self) -> Result<(), StoreError> {
        self.timed("check schema", async {
            let client = self.client().await?;
            let rows = client.query("SELECT version FROM quern_schema_migrations", &[]).await;
            let applied: Vec<i32> = match rows {
                Ok(rows) => rows.iter().map(|row| row.get(0)).collect(),
                // The table does not exist: nothing was ever applied.
                Err(error) if error.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => Vec::new(),
                Err(error) => return Err(StoreError::db("read quern_schema_migrations")(error)),
            };
            let missing: Vec<i32> =
                MIGRATIONS.iter().map(|m| m.version).filter(|version| !applied.contains(version)).collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(StoreError::SchemaBehind { missing })
            }
        })
        .await
    }

    /// Fails when `quern_chunks.embedding` exists with another dimension than `dimension`.
    pub async fn check_dimension(&self, dimension: usize) -> Result<(), StoreError> {
        self.timed("check dimension", async {
            let client = self.client().await?;
            // For pgvector's `vector(n)`, the column's type modifier is n.
            let row = client
                .query_opt(
                    "SELECT a.atttypmod FROM pg_attribute a
                     WHERE a.attrelid = to_regclass('quern_chunks') AND a.attname = 'embedding' AND NOT a.attisdropped",
                    &[],
                )
                .await
                .map_err(StoreError::db("read vector dimension"))?;
            if let Some(row) = row {
                let existing: i32 = row.get(0);
                if existing > 0 && existing as usize != dimension {
                    return Err(StoreError::DimensionMismatch { configured: dimension, existing: existing as usize });
                }
            }
            Ok(())
        })
        .await
    }
}

async fn lock(tx: &Transaction<'_>) -> Result<(), StoreError> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(StoreError::db("lock migrations"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::MIGRATIONS;

    #[test]
    fn the_list_matches_the_files_in_migrations() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .expect("migrations dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".sql"))
            .collect();
        files.sort();
        let listed: Vec<String> = MIGRATIONS.iter().map(|m| format!("{:04}_{}.sql", m.version, m.name)).collect();
        assert_eq!(files, listed);
        for pair in MIGRATIONS.windows(2) {
            assert!(pair[0].version < pair[1].version);
        }
    }
}
