//! Quern's benchmarks. `cargo bench -p quern-benches` runs the criterion micro-benchmarks in `benches/core.rs`
//! (chunking and job decoding, the worker's per-job CPU work) and prints their figures.
//!
//! This library holds the inputs they share, so every benchmark measures the same documents.

/// A deterministic English-like document of about `bytes` bytes, in sentences and paragraphs.
pub fn sample_document(bytes: usize) -> String {
    const WORDS: &[&str] = &[
        "the", "river", "carried", "grain", "past", "a", "mill", "where", "lanterns", "burned", "through", "winter",
        "and", "every", "ledger", "recorded", "copper", "coins", "traded", "for", "harvest", "in", "valley",
        "orchards",
    ];
    let mut text = String::with_capacity(bytes + 16);
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut words_in_sentence = 0;
    while text.len() < bytes {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        text.push_str(WORDS[(state >> 33) as usize % WORDS.len()]);
        words_in_sentence += 1;
        if words_in_sentence == 14 {
            text.push_str(". ");
            words_in_sentence = 0;
            if (state >> 20).is_multiple_of(5) {
                text.push_str("\n\n");
            }
        } else {
            text.push(' ');
        }
    }
    text
}
