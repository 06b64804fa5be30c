//! Typed failures: a model directory that cannot be served, and an embedding that could not be computed.

use std::path::PathBuf;

/// The model directory cannot be loaded. [`ModelError::Missing`] is the one a fresh machine meets, and says what to run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file the model needs is not there: the model was never fetched, or the directory is wrong.
    #[error("no model in {}: {file} is missing; run `bash scripts/fetch-model.sh` to download it", dir.display())]
    Missing {
        /// The directory searched.
        dir: PathBuf,
        /// The first file found missing.
        file: &'static str,
    },
    /// A file is there but unreadable.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is not what the model needs (bad JSON, an unsupported architecture or pooling, wrong tensors).
    #[error("{}: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// Embedding a batch failed. Not the client's fault: the server answers `500`.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// The tokenizer refused a text.
    #[error("tokenizing failed: {0}")]
    Tokenize(String),
    /// A tensor operation failed.
    #[error("inference failed: {0}")]
    Inference(#[from] candle_core::Error),
}
