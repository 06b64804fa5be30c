//! The OpenAI-compatible `/v1/embeddings` request and response bodies, shared by the client and the fake embedder.

use serde::{Deserialize, Serialize};

/// Request body as the client sends it (borrowed, so batching copies no text).
#[derive(Debug, Serialize)]
pub struct EmbeddingRequestRef<'a> {
    /// Model name the provider should use.
    pub model: &'a str,
    /// Texts to embed, answered in the same order.
    pub input: &'a [&'a str],
    /// Always `float`: base64 would save bytes but some compatible servers do not support it.
    pub encoding_format: &'static str,
}

/// Request body as a server receives it; OpenAI accepts one string or an array of strings.
#[derive(Debug, Deserialize)]
pub struct EmbeddingRequest {
    /// Model name.
    pub model: String,
    /// One text or many.
    pub input: EmbeddingInput,
}

/// `input` as one string or many.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingInput {
    /// A single text.
    One(String),
    /// A batch of texts.
    Many(Vec<String>),
}

impl EmbeddingInput {
    /// The texts, in order.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            EmbeddingInput::One(text) => vec![text],
            EmbeddingInput::Many(texts) => texts,
        }
    }
}

/// Response body.
#[derive(Debug, Serialize, Deserialize)]
pub struct EmbeddingResponse {
    /// One entry per input; `index` says which.
    pub data: Vec<EmbeddingData>,
    /// Model that answered.
    #[serde(default)]
    pub model: String,
    /// Token accounting, when the provider reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<EmbeddingUsage>,
}

/// One embedding.
#[derive(Debug, Serialize, Deserialize)]
pub struct EmbeddingData {
    /// Position of the input this vector belongs to.
    pub index: usize,
    /// The vector.
    pub embedding: Vec<f32>,
}

/// Token counts reported by the provider.
#[derive(Debug, Serialize, Deserialize)]
pub struct EmbeddingUsage {
    /// Tokens in the inputs.
    pub prompt_tokens: u64,
    /// Tokens billed.
    pub total_tokens: u64,
}
