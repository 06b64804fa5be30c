//! The BERT encoder that all-MiniLM-L6-v2 is, on candle-core and candle-nn: embeddings, then self-attention layers.
//!
//! Our own ~150 lines rather than candle-transformers' `BertModel`: that crate carries every model candle knows and
//! took 270 s of a debug build on 2 cores (plus a second `tokenizers` version), for the one file we would use.
//! Inference only: no dropout, no pooler (sentence-transformers pools the last hidden states itself).

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};
use serde::Deserialize;

use crate::kernels;

/// The fields of Hugging Face's `config.json` the encoder needs.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    /// Rows of the word-embedding table.
    pub vocab_size: usize,
    /// Width of every hidden state: the embedding dimension (384 for all-MiniLM-L6-v2).
    pub hidden_size: usize,
    /// Transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer; `hidden_size` must be a multiple.
    pub num_attention_heads: usize,
    /// Width of each layer's feed-forward block.
    pub intermediate_size: usize,
    /// Longest input the position table covers.
    pub max_position_embeddings: usize,
    /// Rows of the token-type (segment) table.
    pub type_vocab_size: usize,
    /// Epsilon of every layer norm.
    pub layer_norm_eps: f64,
    /// Activation of the feed-forward block; only `gelu` (the exact, erf-based one) is supported.
    pub hidden_act: String,
}

impl BertConfig {
    /// Why this encoder cannot run the configuration, if it cannot.
    pub fn unsupported(&self) -> Option<String> {
        if self.hidden_act != "gelu" {
            return Some(format!("hidden_act {:?} (only \"gelu\" is implemented)", self.hidden_act));
        }
        if self.hidden_size.checked_rem(self.num_attention_heads) != Some(0) {
            return Some(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        None
    }
}

/// The loaded encoder: `forward` maps token ids and an attention mask to the last layer's hidden states.
#[derive(Debug)]
pub struct Bert {
    word_embeddings: Embedding,
    /// Position embeddings plus the token-type-0 row, summed once at load: every input here is one segment.
    position_and_type: Tensor,
    embeddings_norm: LayerNorm,
    layers: Vec<Layer>,
    heads: usize,
    head_dim: usize,
}

#[derive(Debug)]
struct Layer {
    /// Query, key and value projections fused into one matrix (one matrix product instead of three); the query
    /// rows are pre-scaled by 1/sqrt(head_dim), so the scores need no scaling pass.
    qkv: Linear,
    attention_out: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

fn linear(vb: VarBuilder, inputs: usize, outputs: usize) -> Result<Linear> {
    Ok(Linear::new(vb.get((outputs, inputs), "weight")?, Some(vb.get(outputs, "bias")?)))
}

fn layer_norm(vb: VarBuilder, size: usize, eps: f64) -> Result<LayerNorm> {
    Ok(LayerNorm::new(vb.get(size, "weight")?, vb.get(size, "bias")?, eps))
}

impl Bert {
    /// Builds the encoder from Hugging Face's tensor names (`embeddings.*`, `encoder.layer.N.*`), with or without
    /// a leading `bert.`.
    pub fn load(vb: VarBuilder, config: &BertConfig) -> Result<Self> {
        let vb = if vb.contains_tensor("bert.embeddings.word_embeddings.weight") { vb.pp("bert") } else { vb };
        let hidden = config.hidden_size;
        let eps = config.layer_norm_eps;
        let heads = config.num_attention_heads;
        let head_dim = hidden / heads;

        let emb = vb.pp("embeddings");
        let word_embeddings = Embedding::new(emb.get((config.vocab_size, hidden), "word_embeddings.weight")?, hidden);
        let positions = emb.get((config.max_position_embeddings, hidden), "position_embeddings.weight")?;
        let types = emb.get((config.type_vocab_size, hidden), "token_type_embeddings.weight")?;
        let position_and_type = positions.broadcast_add(&types.narrow(0, 0, 1)?)?;
        let embeddings_norm = layer_norm(emb.pp("LayerNorm"), hidden, eps)?;

        let scale = 1.0 / (head_dim as f64).sqrt();
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let vb = vb.pp(format!("encoder.layer.{i}"));
                let attention = vb.pp("attention");
                let this = attention.pp("self");
                let projection = |name: &str| -> Result<(Tensor, Tensor)> {
                    let vb = this.pp(name);
                    Ok((vb.get((hidden, hidden), "weight")?, vb.get(hidden, "bias")?))
                };
                let (query, query_bias) = projection("query")?;
                let (key, key_bias) = projection("key")?;
                let (value, value_bias) = projection("value")?;
                let weight = Tensor::cat(&[(query * scale)?, key, value], 0)?;
                let bias = Tensor::cat(&[(query_bias * scale)?, key_bias, value_bias], 0)?;
                Ok(Layer {
                    qkv: Linear::new(weight, Some(bias)),
                    attention_out: linear(attention.pp("output.dense"), hidden, hidden)?,
                    attention_norm: layer_norm(attention.pp("output.LayerNorm"), hidden, eps)?,
                    intermediate: linear(vb.pp("intermediate.dense"), hidden, config.intermediate_size)?,
                    output: linear(vb.pp("output.dense"), config.intermediate_size, hidden)?,
                    output_norm: layer_norm(vb.pp("output.LayerNorm"), hidden, eps)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { word_embeddings, position_and_type, embeddings_norm, layers, heads, head_dim })
    }

    /// `ids` is `(batch, seq)` `u32`, each text's `lengths[i]` real tokens followed by padding. Returns the last
    /// hidden states, `(batch, seq, hidden)` `f32`; those of padding positions are meaningless.
    pub fn forward(&self, ids: &Tensor, lengths: &[usize]) -> Result<Tensor> {
        let (_, seq) = ids.dims2()?;
        let mut x = self.word_embeddings.forward(ids)?.broadcast_add(&self.position_and_type.narrow(0, 0, seq)?)?;
        x = self.embeddings_norm.forward(&x)?;
        for layer in &self.layers {
            x = layer.forward(&x, lengths, self.heads, self.head_dim)?;
        }
        Ok(x)
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        self.position_and_type.device()
    }
}

impl Layer {
    fn forward(&self, x: &Tensor, lengths: &[usize], heads: usize, head_dim: usize) -> Result<Tensor> {
        let (batch, seq, hidden) = x.dims3()?;
        // (batch, seq, 3 × hidden) → three (batch, heads, seq, head_dim) tensors, contiguous for the matmuls.
        let qkv = self.qkv.forward(x)?.reshape((batch, seq, 3, heads, head_dim))?.permute((2, 0, 3, 1, 4))?;
        let qkv = qkv.contiguous()?;
        let (q, k, v) = (qkv.get(0)?, qkv.get(1)?, qkv.get(2)?);
        // Padding keys get exactly zero weight, so a text's vector does not depend on the batch it is padded into.
        let probs = kernels::masked_softmax(&q.matmul(&k.t()?)?, lengths)?;
        let context = probs.matmul(&v)?.transpose(1, 2)?.reshape((batch, seq, hidden))?;
        let x = self.attention_norm.forward(&(self.attention_out.forward(&context)? + x)?)?;
        let inner = kernels::gelu(&self.intermediate.forward(&x)?)?;
        self.output_norm.forward(&(self.output.forward(&inner)? + x)?)
    }
}

/// Mean of the hidden states over the real tokens, then scaled to unit length: sentence-transformers' `Pooling`
/// (mean tokens) and `Normalize` modules. `hidden` is `(batch, seq, dim)`, `mask` `(batch, seq)` `u32`.
pub fn mean_pool_normalized(hidden: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let mask = mask.to_dtype(DType::F32)?.unsqueeze(D::Minus1)?;
    let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
    let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
    let mean = summed.broadcast_div(&counts)?;
    // torch.nn.functional.normalize divides by max(norm, 1e-12).
    let norms = mean.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
    mean.broadcast_div(&norms)
}
