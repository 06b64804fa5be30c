//! Which embedding API to call, and how.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use quern_embed::{EmbeddingClientConfig, VectorEncoding};
use secrecy::{ExposeSecret, SecretString};

use crate::secret::{read_secret_file, secret, SettingError};

/// Which embedding API to call.
#[derive(Debug, Clone, Args)]
pub struct EmbeddingArgs {
    /// OpenAI-compatible embedding API: a base URL (`/v1/embeddings` is appended), a URL ending in `/v1`, or the
    /// full endpoint. The default is the fake embedder started by the quickstart.
    #[arg(long, env = "QUERN_EMBEDDING_URL", default_value = "http://127.0.0.1:8089")]
    pub embedding_url: String,
    /// Model name sent with each request; stored with each document.
    #[arg(long, env = "QUERN_EMBEDDING_MODEL", default_value = "quern-fake-lexical")]
    pub embedding_model: String,
    /// Bearer API key, if the provider needs one (never logged).
    #[arg(long, env = "QUERN_EMBEDDING_API_KEY", value_parser = secret, hide_env_values = true)]
    pub embedding_api_key: Option<SecretString>,
    /// File holding the API key instead (a mounted Kubernetes secret, say); not together with --embedding-api-key.
    #[arg(long, env = "QUERN_EMBEDDING_API_KEY_FILE", value_name = "FILE")]
    pub embedding_api_key_file: Option<PathBuf>,
    /// Dimension of the vectors; the `vector(D)` column is created with it and every answer is checked against it.
    #[arg(long, env = "QUERN_EMBEDDING_DIM", default_value_t = 384, value_parser = clap::value_parser!(u32).range(1..=16000))]
    pub embedding_dim: u32,
    /// Timeout of one embedding request, in seconds. A request that times out is resent (twice at most) once the
    /// provider has worked off what it held, each time with twice the time (up to 4×), with the concurrency
    /// limit cut to 1.
    #[arg(long, env = "QUERN_EMBEDDING_TIMEOUT_SECS", default_value_t = 30)]
    pub embedding_timeout_secs: u64,
    /// How vectors are asked to come back (`encoding_format`): `base64` saves the worker parsing decimal numbers
    /// (OpenAI, text-embeddings-inference and vLLM support it; a server that ignores it answers with numbers,
    /// which are read too). A server that refuses it is asked for `float` instead from its first refusal on
    /// (logged once, counted in quern_embedding_encoding_fallbacks_total); `float` skips that first refusal.
    #[arg(long, env = "QUERN_EMBEDDING_ENCODING", value_enum, default_value_t = EmbeddingEncoding::Base64)]
    pub embedding_encoding: EmbeddingEncoding,
}

/// `--embedding-encoding` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EmbeddingEncoding {
    /// Base64 of little-endian 32-bit floats.
    Base64,
    /// Arrays of decimal numbers.
    Float,
}

impl EmbeddingArgs {
    /// The client settings, with the API key from --embedding-api-key-file when one is given.
    pub fn client_config(&self) -> Result<EmbeddingClientConfig, SettingError> {
        const SETTING: &str = "--embedding-api-key-file (QUERN_EMBEDDING_API_KEY_FILE)";
        // An empty QUERN_EMBEDDING_API_KEY means none, not `Authorization: Bearer ` with nothing after it.
        let given = self.embedding_api_key.clone().filter(|key| !key.expose_secret().trim().is_empty());
        let api_key = match (&self.embedding_api_key_file, given) {
            (None, key) => key,
            (Some(_), Some(_)) => {
                return Err(SettingError::new(SETTING, "--embedding-api-key is given too: give the key in one place"))
            }
            (Some(file), None) => Some(read_secret_file(SETTING, file)?),
        };
        Ok(EmbeddingClientConfig {
            url: self.embedding_url.clone(),
            model: self.embedding_model.clone(),
            api_key,
            dimension: self.embedding_dim as usize,
            request_timeout: Duration::from_secs(self.embedding_timeout_secs.max(1)),
            connect_timeout: Duration::from_secs(5),
            encoding: match self.embedding_encoding {
                EmbeddingEncoding::Base64 => VectorEncoding::Base64,
                EmbeddingEncoding::Float => VectorEncoding::Float,
            },
        })
    }
}
