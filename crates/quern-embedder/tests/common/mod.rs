//! Shared by the test binaries: the model, loaded once per binary from the cache `scripts/fetch-model.sh` fills.

use std::sync::{Arc, OnceLock};

use quern_embedder::Embedder;

/// The model from `$QUERN_MODEL_DIR` or the default cache. A missing model fails the test, never skips it: CI runs
/// `bash scripts/fetch-model.sh` before the tests.
pub fn embedder() -> Arc<Embedder> {
    static MODEL: OnceLock<Arc<Embedder>> = OnceLock::new();
    let model = MODEL.get_or_init(|| {
        let dir = quern_embedder::default_model_dir();
        match Embedder::load(&dir) {
            Ok(embedder) => Arc::new(embedder),
            Err(err) => panic!("these tests need the model: {err} (or set QUERN_MODEL_DIR to a copy)"),
        }
    });
    Arc::clone(model)
}

/// Cosine similarity; the vectors are unit length, so a dot product.
#[allow(dead_code)] // not every test binary uses it
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Largest absolute difference between two vectors.
#[allow(dead_code)]
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// `words` common English words, each one token, cycled: a text whose first N tokens are its first N words.
#[allow(dead_code)]
pub fn one_token_words(words: usize) -> String {
    const WORDS: [&str; 12] = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "house", "with"];
    (0..words).map(|i| WORDS[i % WORDS.len()]).collect::<Vec<_>>().join(" ")
}
