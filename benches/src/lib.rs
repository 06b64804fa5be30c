//! Quern's benchmarks:
//! - `bash scripts/bench.sh` runs the end-to-end harness (`src/bin/quern-bench.rs`): worker processes against the
//!   real services and the fake embedder, with figures as a table and JSON, and the Celery baseline beside it;
//! - `cargo bench -p quern-benches --bench core` runs the criterion micro-benchmarks (chunking, job decoding).
//!
//! This library holds the inputs they share, so every benchmark measures the same documents.

/// A deterministic English-like document of about `bytes` bytes, in sentences and paragraphs.
pub fn sample_document(bytes: usize) -> String {
    sample_document_seeded(bytes, 0)
}

/// [`sample_document`] varied by `seed`, so a corpus of many documents is not one text repeated.
pub fn sample_document_seeded(bytes: usize, seed: u64) -> String {
    const WORDS: &[&str] = &[
        "the", "river", "carried", "grain", "past", "a", "mill", "where", "lanterns", "burned", "through", "winter",
        "and", "every", "ledger", "recorded", "copper", "coins", "traded", "for", "harvest", "in", "valley",
        "orchards",
    ];
    let mut text = String::with_capacity(bytes + 16);
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15 ^ seed.wrapping_mul(0xff51_afd7_ed55_8ccd);
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
