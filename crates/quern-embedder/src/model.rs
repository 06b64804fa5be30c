//! The sentence-embedding model: tokenizer, BERT encoder, mean pooling and L2 normalisation, loaded from a directory.
//!
//! What sentence-transformers does for all-MiniLM-L6-v2 (`modules.json`: Transformer, Pooling, Normalize), checked
//! against its configs at load so another model's directory is refused rather than served wrong: inputs cut at
//! `max_seq_length` tokens (256; the tokenizer file's own 128 is not what sentence-transformers uses), the mean of
//! the last hidden states over the real tokens, scaled to unit length.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tokenizers::{Tokenizer, TruncationParams};

use crate::batching;
use crate::bert::{mean_pool_normalized, Bert, BertConfig};
use crate::config::DEFAULT_TOKENS_PER_BATCH;
use crate::error::{EmbedError, ModelError};

/// The files read from the model directory, in the order they are checked.
pub const MODEL_FILES: [&str; 6] = [
    "config.json",
    "modules.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
    "tokenizer.json",
    "model.safetensors",
];

/// A loaded model. `Send + Sync`: the worker threads share one copy of the weights.
#[derive(Debug)]
pub struct Embedder {
    tokenizer: Tokenizer,
    bert: Bert,
    dim: usize,
    max_tokens: usize,
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: usize,
}

#[derive(Deserialize)]
struct PoolingConfig {
    word_embedding_dimension: usize,
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
}

#[derive(Deserialize)]
struct Module {
    #[serde(rename = "type")]
    kind: String,
}

fn read_json<T: DeserializeOwned>(dir: &Path, file: &str) -> Result<T, ModelError> {
    let path = dir.join(file);
    let bytes = std::fs::read(&path).map_err(|source| ModelError::Read { path: path.clone(), source })?;
    serde_json::from_slice(&bytes).map_err(|err| ModelError::Invalid { path, reason: err.to_string() })
}

fn invalid(dir: &Path, file: &str, reason: impl Into<String>) -> ModelError {
    ModelError::Invalid { path: dir.join(file), reason: reason.into() }
}

impl Embedder {
    /// Loads the model from `dir` (see [`MODEL_FILES`]): about 90 MB read, a fraction of a second in a release build.
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        if let Some(file) = MODEL_FILES.into_iter().find(|file| !dir.join(file).is_file()) {
            return Err(ModelError::Missing { dir: dir.to_path_buf(), file });
        }
        let config: BertConfig = read_json(dir, "config.json")?;
        if let Some(reason) = config.unsupported() {
            return Err(invalid(dir, "config.json", format!("unsupported model: {reason}")));
        }
        let modules: Vec<Module> = read_json(dir, "modules.json")?;
        let kinds: Vec<&str> = modules.iter().map(|m| m.kind.rsplit('.').next().unwrap_or_default()).collect();
        if kinds != ["Transformer", "Pooling", "Normalize"] {
            return Err(invalid(
                dir,
                "modules.json",
                format!("expected Transformer, Pooling, Normalize; found {kinds:?}"),
            ));
        }
        let pooling: PoolingConfig = read_json(dir, "1_Pooling/config.json")?;
        let mean_only = pooling.pooling_mode_mean_tokens
            && !(pooling.pooling_mode_cls_token
                || pooling.pooling_mode_max_tokens
                || pooling.pooling_mode_mean_sqrt_len_tokens);
        if !mean_only || pooling.word_embedding_dimension != config.hidden_size {
            return Err(invalid(dir, "1_Pooling/config.json", "only mean pooling of the hidden states is implemented"));
        }
        let sentence: SentenceBertConfig = read_json(dir, "sentence_bert_config.json")?;
        let max_tokens = sentence.max_seq_length.min(config.max_position_embeddings);

        let weights_path = dir.join("model.safetensors");
        let weights =
            |err: candle_core::Error| ModelError::Invalid { path: weights_path.clone(), reason: err.to_string() };
        let tensors = candle_core::safetensors::load(&weights_path, &Device::Cpu).map_err(weights)?;
        let bert = Bert::load(VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu), &config).map_err(weights)?;

        let tokenizer_path: PathBuf = dir.join("tokenizer.json");
        let tokenizer_error = |err: tokenizers::Error| invalid(dir, "tokenizer.json", err.to_string());
        let mut tokenizer = Tokenizer::from_file(&tokenizer_path).map_err(tokenizer_error)?;
        // Padding is ours (per forward pass, to the longest of the group); truncation counts [CLS] and [SEP].
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: max_tokens, ..Default::default() }))
            .map_err(tokenizer_error)?;
        Ok(Self { tokenizer, bert, dim: config.hidden_size, max_tokens })
    }

    /// Length of every vector (384).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Most tokens of an input, `[CLS]` and `[SEP]` included (256); the rest of a longer text is ignored.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// The token ids the model sees for `text`: `[CLS]`, the word pieces, `[SEP]`, cut to [`Embedder::max_tokens`].
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>, EmbedError> {
        let encoding = self.tokenizer.encode_fast(text, true).map_err(|err| EmbedError::Tokenize(err.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// One forward pass over a group of tokenized texts, padded to the longest: the vectors, one after another
    /// (`batch.len() × dim` floats). Group texts of similar length ([`crate::batching::plan`]); padding costs as
    /// much as real tokens.
    pub fn embed_tokens(&self, batch: &[&[u32]]) -> Result<Vec<f32>, EmbedError> {
        let longest = batch.iter().map(|ids| ids.len()).max().unwrap_or(0);
        if longest == 0 {
            return Ok(Vec::new());
        }
        let mut ids = vec![0u32; batch.len() * longest];
        let mut mask = vec![0u32; batch.len() * longest];
        for ((text, ids), mask) in batch.iter().zip(ids.chunks_exact_mut(longest)).zip(mask.chunks_exact_mut(longest)) {
            ids[..text.len()].copy_from_slice(text);
            mask[..text.len()].fill(1);
        }
        let lengths: Vec<usize> = batch.iter().map(|text| text.len()).collect();
        let device = self.bert.device();
        let ids = Tensor::from_vec(ids, (batch.len(), longest), device)?;
        let mask = Tensor::from_vec(mask, (batch.len(), longest), device)?;
        let hidden = self.bert.forward(&ids, &lengths)?;
        Ok(mean_pool_normalized(&hidden, &mask)?.flatten_all()?.to_vec1()?)
    }

    /// Embeds `texts` on the calling thread, grouped by length as the server does: one unit vector per text, in order.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let ids = texts.iter().map(|text| self.tokenize(text)).collect::<Result<Vec<_>, _>>()?;
        let lengths: Vec<usize> = ids.iter().map(Vec::len).collect();
        let mut vectors = vec![Vec::new(); texts.len()];
        for group in batching::plan(&lengths, DEFAULT_TOKENS_PER_BATCH) {
            let batch: Vec<&[u32]> = group.iter().map(|&i| ids[i].as_slice()).collect();
            let flat = self.embed_tokens(&batch)?;
            for (&i, vector) in group.iter().zip(flat.chunks_exact(self.dim)) {
                vectors[i] = vector.to_vec();
            }
        }
        Ok(vectors)
    }
}
