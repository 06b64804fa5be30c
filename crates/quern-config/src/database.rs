//! Where Postgres is, how to reach it, and how long to wait for it.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use quern_store::StoreConfig;
use secrecy::{ExposeSecret, SecretString};

use crate::secret::{postgres_with_password, read_secret_file, secret, SettingError};

/// Where Postgres is and how long to wait for it.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// Postgres URL; the database needs the pgvector extension (a password in it is never logged). libpq's TLS
    /// parameters are honoured: `sslmode` (disable, prefer, require, verify-ca, verify-full), `sslrootcert`,
    /// `sslcert`, `sslkey`.
    #[arg(long, env = "QUERN_DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5433/postgres", value_parser = secret, hide_env_values = true)]
    pub database_url: SecretString,
    /// File holding the database password (a mounted Kubernetes secret, say), added to --database-url, which
    /// must then hold none.
    #[arg(long, env = "QUERN_DATABASE_PASSWORD_FILE", value_name = "FILE")]
    pub database_password_file: Option<PathBuf>,
    /// Largest number of pooled database connections.
    #[arg(long, env = "QUERN_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: usize,
    /// Server-side statement timeout, in seconds.
    #[arg(long, env = "QUERN_DB_STATEMENT_TIMEOUT_SECS", default_value_t = 60)]
    pub db_statement_timeout_secs: u64,
    /// Postgres schema of Quern's tables (created by the migrations), first on each connection's search_path.
    /// Default: the database's own (`public`); `quern-worker --shadow` defaults it to `quern_shadow`.
    #[arg(long, env = "QUERN_DATABASE_SCHEMA", value_name = "SCHEMA")]
    pub database_schema: Option<String>,
}

impl DatabaseArgs {
    /// The store settings, with the password from --database-password-file when one is given.
    pub fn store_config(&self) -> Result<StoreConfig, SettingError> {
        let mut config = StoreConfig::new("");
        config.url = match &self.database_password_file {
            None => self.database_url.clone(),
            Some(file) => {
                const SETTING: &str = "--database-password-file (QUERN_DATABASE_PASSWORD_FILE)";
                let password = read_secret_file(SETTING, file)?;
                postgres_with_password(SETTING, self.database_url.expose_secret(), &password)?
            }
        };
        config.max_connections = self.db_max_connections.max(1);
        config.statement_timeout = Duration::from_secs(self.db_statement_timeout_secs.max(1));
        config.operation_timeout = config.statement_timeout + Duration::from_secs(30);
        config.schema = self.database_schema.clone().filter(|schema| !schema.is_empty());
        Ok(config)
    }
}
