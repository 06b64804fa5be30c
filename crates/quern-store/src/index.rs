//! The HNSW parameters of the segments' vector indexes (see [`crate::segments`]), checked as pgvector checks them.

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
