//! Settings shared by every Quern binary (`quern-worker`, `quern`), so that on-call runs `quern dlq …` with the
//! fleet's own settings:
//!
//! - [`BrokerArgs`], [`DatabaseArgs`], [`EmbeddingArgs`]: where RabbitMQ, Postgres and the embedding API are, as
//!   flags and `QUERN_*` environment variables;
//! - [`secret`]: secrets typed as secrets, and read from files (`QUERN_DATABASE_PASSWORD_FILE`, …) as Kubernetes
//!   mounts them;
//! - [`parse_duration`]: the one duration syntax (`500ms`, `30s`, `1h30m`, `7d`) of every flag;
//! - [`retention`]: how long finished jobs and tombstones are kept ([`RetentionArgs`]), for the worker and
//!   `quern prune`;
//! - [`file`]: the TOML config file (`--config`, `QUERN_CONFIG`), keyed by flag name, below flags and environment.

mod broker;
mod database;
mod duration;
mod embedding;
pub mod file;
pub mod retention;
pub mod secret;

pub use broker::BrokerArgs;
pub use database::DatabaseArgs;
pub use duration::parse_duration;
pub use embedding::{EmbeddingArgs, EmbeddingEncoding};
pub use retention::RetentionArgs;
pub use secret::SettingError;
