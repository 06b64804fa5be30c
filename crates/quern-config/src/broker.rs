//! Where RabbitMQ is, and which names to use on it.

use std::path::PathBuf;

use clap::Args;
use quern_core::Topology;
use secrecy::SecretString;

use crate::secret::{amqp_with_password, read_secret_file, secret, SettingError};

fn topology(value: &str) -> Result<Topology, String> {
    Topology::new(value).map_err(|e| e.to_string())
}

/// Where the broker is and which names to use on it.
#[derive(Debug, Clone, Args)]
pub struct BrokerArgs {
    /// RabbitMQ URL, `amqp://` or `amqps://` (a password in it is never logged).
    #[arg(long, env = "QUERN_AMQP_URL", default_value = "amqp://guest:guest@127.0.0.1:5672/%2f", value_parser = secret, hide_env_values = true)]
    pub amqp_url: SecretString,
    /// File holding the broker password (a mounted Kubernetes secret, say), put into --amqp-url after its user
    /// name; the URL must then hold none.
    #[arg(long, env = "QUERN_AMQP_PASSWORD_FILE", value_name = "FILE")]
    pub amqp_password_file: Option<PathBuf>,
    /// Prefix of every exchange and queue name: `<prefix>` exchange, `<prefix>.ingest` and `<prefix>.dead` queues.
    #[arg(long = "queue-prefix", env = "QUERN_QUEUE_PREFIX", default_value = "quern", value_parser = topology)]
    pub topology: Topology,
}

impl BrokerArgs {
    /// The URL to connect with: --amqp-url, with the password from --amqp-password-file when one is given.
    pub fn url(&self) -> Result<SecretString, SettingError> {
        const SETTING: &str = "--amqp-password-file (QUERN_AMQP_PASSWORD_FILE)";
        let Some(file) = &self.amqp_password_file else { return Ok(self.amqp_url.clone()) };
        let password = read_secret_file(SETTING, file)?;
        amqp_with_password(SETTING, secrecy::ExposeSecret::expose_secret(&self.amqp_url), &password)
    }
}
