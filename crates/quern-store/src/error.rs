//! Database failures, classified: a restart, a deadlock or a timeout pass; a constraint violation does not.

use std::time::Duration;

use quern_core::ErrorClass;
use tokio_postgres::error::SqlState;

/// A failed database operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The settings cannot work (e.g. an unparsable URL); the URL itself is never shown.
    #[error("database misconfigured: {0}")]
    Config(String),
    /// No connection could be had from the pool in time.
    #[error("no database connection: {0}")]
    Pool(String),
    /// The operation did not finish in time (client-side timeout).
    #[error("database {operation} timed out after {timeout:?}")]
    Timeout {
        /// What was being done.
        operation: &'static str,
        /// The limit.
        timeout: Duration,
    },
    /// Postgres answered with an error, or the connection broke.
    #[error("database {operation} failed: {}", describe(source))]
    Db {
        /// What was being done.
        operation: &'static str,
        /// The driver's error.
        source: tokio_postgres::Error,
    },
    /// The transaction this job's write shared with others failed for a reason that concerns them all (a lost
    /// connection, a timeout, a restart): retrying later can help.
    #[error("the write transaction shared by {jobs} jobs failed: {message}")]
    GroupFailed {
        /// Jobs in the transaction.
        jobs: usize,
        /// What went wrong.
        message: String,
    },
    /// The schema's vector column has another dimension than the configured one.
    #[error(
        "quern_chunks.embedding has dimension {existing} but the embedding dimension is configured as {configured}"
    )]
    DimensionMismatch {
        /// From the configuration.
        configured: usize,
        /// From the database.
        existing: usize,
    },
    /// A migration already applied differs from the file shipped with this build.
    #[error("migration {version} ({name}) was changed after it was applied")]
    MigrationChanged {
        /// Migration version.
        version: i32,
        /// Migration name.
        name: &'static str,
    },
}

impl StoreError {
    /// Whether retrying (on a fresh connection) can help.
    pub fn class(&self) -> ErrorClass {
        match self {
            StoreError::Pool(_) | StoreError::Timeout { .. } | StoreError::GroupFailed { .. } => ErrorClass::Transient,
            StoreError::Db { source, .. } => classify_db(source),
            StoreError::Config(_) | StoreError::DimensionMismatch { .. } | StoreError::MigrationChanged { .. } => {
                ErrorClass::Permanent
            }
        }
    }

    pub(crate) fn db(operation: &'static str) -> impl FnOnce(tokio_postgres::Error) -> StoreError {
        move |source| StoreError::Db { operation, source }
    }
}

/// The server's own message and SQLSTATE: tokio-postgres's `Display` says only "db error".
fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => error.to_string(),
    }
}

fn classify_db(error: &tokio_postgres::Error) -> ErrorClass {
    let Some(code) = error.code() else {
        // No SQLSTATE: an I/O error or a closed connection (e.g. the server restarted).
        return ErrorClass::Transient;
    };
    let transient = [
        SqlState::T_R_SERIALIZATION_FAILURE,
        SqlState::T_R_DEADLOCK_DETECTED,
        SqlState::ADMIN_SHUTDOWN,
        SqlState::CRASH_SHUTDOWN,
        SqlState::CANNOT_CONNECT_NOW,
        SqlState::TOO_MANY_CONNECTIONS,
        SqlState::QUERY_CANCELED,
        SqlState::LOCK_NOT_AVAILABLE,
    ];
    // Class 08: connection exceptions.
    if transient.contains(code) || code.code().starts_with("08") {
        ErrorClass::Transient
    } else {
        ErrorClass::Permanent
    }
}
