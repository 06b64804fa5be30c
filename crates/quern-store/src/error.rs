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
    /// A fault inside this process, neither the settings' nor the job's: a background task that stopped, a
    /// broken invariant, a pool that could not be built. Transient: a job that meets it is not dead-lettered
    /// (the worker gives it back; another worker, or this one restarted, can run it).
    #[error("internal error in the database layer: {0}")]
    Internal(String),
    /// A new connection could not be opened: the server is down, refuses us, or does not answer. The target
    /// (host, port, database, user; never the password) and the cause are in the message, the cause told once.
    #[error("cannot connect to PostgreSQL at {target}: {reason}")]
    Connect {
        /// `host:port (database d, user u)`.
        target: String,
        /// Why, e.g. `connection refused` or the server's own message with its SQLSTATE.
        reason: String,
    },
    /// No connection could be had from the pool in time, or the pool is closed.
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
    #[error("database {operation} failed: {}", describe(cause))]
    Db {
        /// What was being done.
        operation: &'static str,
        /// The driver's error: told in the message, not returned by `source()`, so `{:#}` says it once.
        cause: tokio_postgres::Error,
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
    /// The database lacks migrations this build needs (a worker upgraded before `quern migrate` ran): writing
    /// would fail on every job, so a worker waits for the migration instead of dead-lettering its backlog.
    #[error(
        "the database lacks migration{} {} that this build needs: run `quern migrate` (or start one worker with --migrate)",
        if missing.len() == 1 { "" } else { "s" },
        missing.iter().map(i32::to_string).collect::<Vec<_>>().join(", ")
    )]
    SchemaBehind {
        /// Versions not applied.
        missing: Vec<i32>,
    },
}

impl StoreError {
    /// Whether retrying (on a fresh connection) can help.
    pub fn class(&self) -> ErrorClass {
        match self {
            // A refused login is transient too: mid-run it must not dead-letter jobs (a rotated password), and
            // at start-up the role may still be being created by whoever provisions the database.
            StoreError::Connect { .. }
            | StoreError::Pool(_)
            | StoreError::Timeout { .. }
            | StoreError::GroupFailed { .. }
            | StoreError::Internal(_)
            // An operator's `quern migrate` fixes it: waiting is right.
            | StoreError::SchemaBehind { .. } => ErrorClass::Transient,
            StoreError::Db { cause, .. } => classify_db(cause),
            StoreError::Config(_) | StoreError::DimensionMismatch { .. } | StoreError::MigrationChanged { .. } => {
                ErrorClass::Permanent
            }
        }
    }

    /// Whether the fault is inside this process ([`StoreError::Internal`]): no job is to blame for it.
    pub fn is_internal(&self) -> bool {
        matches!(self, StoreError::Internal(_))
    }

    pub(crate) fn db(operation: &'static str) -> impl FnOnce(tokio_postgres::Error) -> StoreError {
        move |cause| StoreError::Db { operation, cause }
    }
}

/// The server's own message and SQLSTATE (tokio-postgres's `Display` says only "db error"), or the innermost
/// cause in plain words (`connection refused`, not "error connecting to server: Connection refused (os error
/// 111)").
pub(crate) fn describe(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return format!("{} (SQLSTATE {})", db.message(), db.code().code());
    }
    let mut cause: &(dyn std::error::Error + 'static) = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    match cause.downcast_ref::<std::io::Error>() {
        Some(io) => quern_core::error_text::io_error(io),
        None if std::ptr::addr_eq(cause, error as &dyn std::error::Error) => error.to_string(),
        None => format!("{error}: {cause}"),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_inside_the_worker_is_transient_and_a_bad_setting_is_not() {
        let internal = StoreError::Internal("the group committer has stopped".into());
        assert_eq!(internal.class(), ErrorClass::Transient);
        assert!(internal.is_internal());
        let config = StoreError::Config("the database URL is not a valid postgres:// URL".into());
        assert_eq!(config.class(), ErrorClass::Permanent);
        assert!(!config.is_internal());
    }
}
