//! The server's settings: where the model is, the name it answers to, the worker pool and the admission bounds.

use std::path::PathBuf;

/// Default TCP port of the binary (the fake embedder's is 8089, so both can run side by side).
pub const DEFAULT_PORT: u16 = 8090;
/// The model id served, as `GET /v1/models` lists it and clients send it.
pub const DEFAULT_MODEL_ID: &str = "all-MiniLM-L6-v2";
/// Most inputs one request may carry; more gets `400`. Twice the worker's default batch of 32, and half of
/// [`DEFAULT_MAX_QUEUED_INPUTS`], so one full request never has to wait for an empty queue to be admitted.
pub const DEFAULT_MAX_BATCH: usize = 64;
/// Most inputs admitted and not yet answered (queued or being embedded); a request that does not fit gets `503`
/// with `Retry-After` at once. 128 inputs of ~1,000 characters are about 20 s of work on the 2-core development
/// machine (README, quern-embedder's throughput), inside the worker's default 30 s request timeout: what is admitted
/// is answered before the client gives up, and what is not is told so at once, which quern-embed's adaptive limit
/// reads as overload. Raise it with the cores (`--max-queued-inputs`).
pub const DEFAULT_MAX_QUEUED_INPUTS: usize = 128;
/// Padded tokens per forward pass. Texts are sorted by length and grouped up to this many tokens (longest × count):
/// batches of 2-4 texts of ~200 tokens gave the most embeddings per second on one thread; bigger ones spend more
/// time in memory traffic (the attention scores grow with the square of the length) than they save in overhead.
pub const DEFAULT_TOKENS_PER_BATCH: usize = 1024;
/// The variable that overrides the model directory (the binary's `--model-dir` wins over it).
pub const MODEL_DIR_ENV: &str = "QUERN_MODEL_DIR";

/// How the server behaves. `Default` serves the model from [`default_model_dir`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbedderConfig {
    /// Directory holding `config.json`, `tokenizer.json`, `model.safetensors` and the sentence-transformers
    /// configs, as `scripts/fetch-model.sh` lays it out.
    pub model_dir: PathBuf,
    /// The model id served; requests naming another model get `404 model_not_found`.
    pub model_id: String,
    /// Inference threads, each running one forward pass at a time on one core (see the crate docs for why).
    pub workers: usize,
    /// Most inputs per request; more gets `400`. At most `max_queued_inputs`.
    pub max_batch: usize,
    /// Most inputs admitted at once (queued or running); a request beyond gets `503` with `Retry-After`.
    pub max_queued_inputs: usize,
    /// Padded tokens per forward pass; an input longer than this still runs, alone.
    pub tokens_per_batch: usize,
}

impl Default for EmbedderConfig {
    fn default() -> Self {
        Self {
            model_dir: default_model_dir(),
            model_id: DEFAULT_MODEL_ID.to_owned(),
            workers: default_workers(),
            max_batch: DEFAULT_MAX_BATCH,
            max_queued_inputs: DEFAULT_MAX_QUEUED_INPUTS,
            tokens_per_batch: DEFAULT_TOKENS_PER_BATCH,
        }
    }
}

/// One worker per core the process may use: each forward pass runs on one thread.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `$QUERN_MODEL_DIR` if set, else `${XDG_CACHE_HOME:-$HOME/.cache}/quern/models/all-MiniLM-L6-v2`, where
/// `scripts/fetch-model.sh` unpacks the model.
pub fn default_model_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(MODEL_DIR_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    cache.join("quern").join("models").join(DEFAULT_MODEL_ID)
}

impl EmbedderConfig {
    /// Checks the values a caller could get wrong; the binary's flag parser enforces the same rules.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        if self.model_id.is_empty() {
            return Err(InvalidConfig("model_id must not be empty".into()));
        }
        for (name, value) in [
            ("workers", self.workers),
            ("max_batch", self.max_batch),
            ("max_queued_inputs", self.max_queued_inputs),
            ("tokens_per_batch", self.tokens_per_batch),
        ] {
            if value == 0 {
                return Err(InvalidConfig(format!("{name} must be at least 1")));
            }
        }
        if self.max_batch > self.max_queued_inputs {
            return Err(InvalidConfig(format!(
                "max_batch ({}) must not exceed max_queued_inputs ({}), or a full request could never be admitted",
                self.max_batch, self.max_queued_inputs
            )));
        }
        Ok(())
    }
}

/// A configuration value out of range; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid embedder configuration: {0}")]
pub struct InvalidConfig(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_bad_values_are_named() {
        assert!(EmbedderConfig::default().validate().is_ok());
        let bad = [
            (EmbedderConfig { workers: 0, ..Default::default() }, "workers"),
            (EmbedderConfig { max_batch: 0, ..Default::default() }, "max_batch"),
            (EmbedderConfig { max_batch: 200, max_queued_inputs: 100, ..Default::default() }, "max_batch"),
            (EmbedderConfig { tokens_per_batch: 0, ..Default::default() }, "tokens_per_batch"),
            (EmbedderConfig { model_id: String::new(), ..Default::default() }, "model_id"),
        ];
        for (config, field) in bad {
            let err = config.validate().expect_err(field).to_string();
            assert!(err.contains(field), "{err}");
        }
    }
}
