//! The settings of the vector storage and of the segments' HNSW indexes (see [`crate::segments`]), checked as
//! pgvector checks them.

use crate::StoreError;

/// pgvector's HNSW build parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HnswParams {
    /// Links per node (pgvector: 2..=100): more means better recall, a larger index and a slower build.
    pub m: u32,
    /// Candidates kept while linking (pgvector: 4..=1000, at least 2 × m): more means better recall, slower build.
    pub ef_construction: u32,
}

impl Default for HnswParams {
    /// pgvector's defaults.
    fn default() -> HnswParams {
        HnswParams { m: 16, ef_construction: 64 }
    }
}

impl HnswParams {
    /// Checks the ranges pgvector enforces, naming the flag at fault.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let invalid = |flag, problem: String| Err(InvalidSetting { flag, problem });
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

/// A setting out of range, named by its flag.
#[derive(Debug, thiserror::Error)]
#[error("{flag} {problem}")]
pub struct InvalidSetting {
    /// The flag, e.g. `--ef-construction`.
    pub flag: &'static str,
    /// What is wrong with its value.
    pub problem: String,
}

/// How `quern_chunks.embedding` stores each vector: chosen when the table is created (see migration 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VectorStorage {
    /// pgvector's `vector`: 4 bytes per dimension.
    #[default]
    Vector,
    /// pgvector's `halfvec`: 2 bytes per dimension (IEEE half precision), so half the table and index, and
    /// faster builds and scans; a query vector is cast to it (`vector` → `halfvec` is an implicit cast).
    Halfvec,
}

impl VectorStorage {
    /// The pgvector type name, as in the column's type.
    pub fn type_name(self) -> &'static str {
        match self {
            VectorStorage::Vector => "vector",
            VectorStorage::Halfvec => "halfvec",
        }
    }

    /// The HNSW operator class for cosine distance on this type.
    pub fn cosine_opclass(self) -> &'static str {
        match self {
            VectorStorage::Vector => "vector_cosine_ops",
            VectorStorage::Halfvec => "halfvec_cosine_ops",
        }
    }

    /// The storage whose pgvector type is `name`, if Quern knows it.
    pub fn from_type_name(name: &str) -> Option<VectorStorage> {
        match name {
            "vector" => Some(VectorStorage::Vector),
            "halfvec" => Some(VectorStorage::Halfvec),
            _ => None,
        }
    }
}

/// How `quern_chunks.embedding` stores its vectors, read from the catalog on `client`.
pub(crate) async fn read_vector_storage(client: &tokio_postgres::Client) -> Result<VectorStorage, StoreError> {
    let row = client
        .query_one(
            "SELECT format_type(a.atttypid, NULL) FROM pg_attribute a
             WHERE a.attrelid = 'quern_chunks'::regclass AND a.attname = 'embedding' AND NOT a.attisdropped",
            &[],
        )
        .await
        .map_err(StoreError::db("read vector storage"))?;
    let name: String = row.get(0);
    VectorStorage::from_type_name(&name)
        .ok_or_else(|| StoreError::Config(format!("quern_chunks.embedding has the unknown type {name}")))
}

impl std::fmt::Display for VectorStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.type_name())
    }
}

impl std::str::FromStr for VectorStorage {
    type Err = String;

    fn from_str(value: &str) -> Result<VectorStorage, String> {
        VectorStorage::from_type_name(value)
            .ok_or_else(|| format!("unknown vector storage `{value}`: expected `vector` or `halfvec`"))
    }
}
