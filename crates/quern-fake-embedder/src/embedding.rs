//! Deterministic lexical embeddings: lower-cased word tokens, feature-hashed into signed buckets, L2-normalised.
//!
//! The algorithm is part of the contract (tests elsewhere compute expected vectors with
//! [`embed_text`], and stored demo data should stay searchable across versions), so change it
//! only deliberately:
//!
//! 1. A token is a maximal run of Unicode alphanumeric characters; everything else separates.
//! 2. Each token is hashed with FNV-1a 64 over the UTF-8 bytes of its lower-cased form, then
//!    scrambled with the MurmurHash3 64-bit finaliser so that every output bit depends on every
//!    input bit (raw FNV-1a has weak high bits for short keys).
//! 3. The high bits choose the bucket (`hash * dim >> 64`, unbiased for any `dim`), the lowest bit
//!    chooses the sign; the token adds ±1 there.
//! 4. Common English function words ([`STOP_WORDS`]) are skipped: they occur in every text and would
//!    otherwise dominate every vector, so a search would rank by "and" and "the".
//! 5. The sum is scaled to unit length. A text with no tokens, or whose tokens cancel out, gets
//!    `1.0` in dimension 0 instead: pgvector's cosine distance is NaN for a zero vector.

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Words that carry no topic, left out of every vector (they still count as usage tokens).
pub const STOP_WORDS: &[&str] = &[
    "a", "about", "after", "all", "also", "am", "an", "and", "any", "are", "as", "at", "be", "been", "before", "but",
    "by", "can", "could", "did", "do", "does", "for", "from", "had", "has", "have", "he", "her", "him", "his", "how",
    "i", "if", "in", "into", "is", "it", "its", "me", "my", "no", "not", "of", "on", "or", "our", "she", "so", "than",
    "that", "the", "their", "them", "then", "there", "they", "this", "to", "unto", "up", "us", "was", "we", "were",
    "what", "when", "which", "who", "will", "with", "would", "you", "your",
];

/// FNV-1a hashes of [`STOP_WORDS`], computed at compile time and sorted for binary search.
static STOP_HASHES: [u64; STOP_WORDS.len()] = {
    let mut hashes = [0u64; STOP_WORDS.len()];
    let mut i = 0;
    while i < STOP_WORDS.len() {
        let bytes = STOP_WORDS[i].as_bytes();
        let mut hash = FNV_OFFSET_BASIS;
        let mut j = 0;
        while j < bytes.len() {
            hash = (hash ^ bytes[j] as u64).wrapping_mul(FNV_PRIME);
            j += 1;
        }
        hashes[i] = hash;
        i += 1;
    }
    // Insertion sort: const-evaluable, and the list is short.
    let mut i = 1;
    while i < hashes.len() {
        let mut j = i;
        while j > 0 && hashes[j - 1] > hashes[j] {
            let t = hashes[j];
            hashes[j] = hashes[j - 1];
            hashes[j - 1] = t;
            j -= 1;
        }
        i += 1;
    }
    hashes
};

#[inline]
fn is_stop_word(fnv: u64) -> bool {
    STOP_HASHES.binary_search(&fnv).is_ok()
}

/// The unit embedding of `text` with `dim` dimensions.
///
/// # Panics
/// If `dim` is 0.
pub fn embed_text(text: &str, dim: usize) -> Vec<f32> {
    assert!(dim > 0, "embedding dimension must be at least 1");
    let mut vector = vec![0.0; dim];
    embed_into(text, &mut vector);
    vector
}

/// Writes the unit embedding of `text` into `out` (whose length is the dimension) and returns the
/// number of word tokens, which the server reports as usage.
///
/// Allocation-free so the server can fill one buffer for a whole batch.
///
/// # Panics
/// If `out` is empty.
pub fn embed_into(text: &str, out: &mut [f32]) -> usize {
    assert!(!out.is_empty(), "embedding dimension must be at least 1");
    out.fill(0.0);
    let mut tokens = 0;
    let mut hash = FNV_OFFSET_BASIS;
    let mut in_token = false;
    for ch in text.chars() {
        if ch.is_alphanumeric() {
            in_token = true;
            if ch.is_ascii() {
                // Fast path for the common case: one byte, lower-cased in place.
                hash = fnv1a_byte(hash, ch.to_ascii_lowercase() as u8);
            } else {
                // Lower-casing may expand (e.g. 'İ' becomes two chars); hash all of them.
                let mut buf = [0u8; 4];
                for lower in ch.to_lowercase() {
                    for &byte in lower.encode_utf8(&mut buf).as_bytes() {
                        hash = fnv1a_byte(hash, byte);
                    }
                }
            }
        } else if in_token {
            if !is_stop_word(hash) {
                add_token(out, hash);
            }
            tokens += 1;
            hash = FNV_OFFSET_BASIS;
            in_token = false;
        }
    }
    if in_token {
        if !is_stop_word(hash) {
            add_token(out, hash);
        }
        tokens += 1;
    }
    normalise(out);
    tokens
}

#[inline]
fn fnv1a_byte(hash: u64, byte: u8) -> u64 {
    (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME)
}

/// MurmurHash3's 64-bit finaliser: a fixed bijection with full avalanche.
#[inline]
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

#[inline]
fn add_token(out: &mut [f32], fnv: u64) {
    let h = fmix64(fnv);
    // Multiply-shift maps the hash onto 0..len without modulo bias and without a division.
    let bucket = ((u128::from(h) * out.len() as u128) >> 64) as usize;
    let sign = if h & 1 == 0 { 1.0 } else { -1.0 };
    out[bucket] += sign;
}

fn normalise(out: &mut [f32]) {
    // Bucket values are small integers, so f32 squares sum exactly; f64 guards huge texts anyway.
    let norm = out.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt();
    if norm == 0.0 {
        out[0] = 1.0;
        return;
    }
    let scale = (1.0 / norm) as f32;
    for x in out.iter_mut() {
        *x *= scale;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(v: &[f32]) -> f32 {
        v.iter().map(|x| x * x).sum::<f32>().sqrt()
    }

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>() / (norm(a) * norm(b))
    }

    #[test]
    fn vectors_are_unit_length_and_deterministic() {
        for text in ["hello world", "The quick brown fox jumps over the lazy dog.", "ünïcödé Straße 東京 123", "a"]
        {
            let v = embed_text(text, 384);
            assert_eq!(v.len(), 384);
            assert!((norm(&v) - 1.0).abs() < 1e-5, "{text:?} has norm {}", norm(&v));
            assert_eq!(v, embed_text(text, 384), "{text:?} is not deterministic");
        }
    }

    #[test]
    fn stable_across_versions() {
        // Pins the algorithm: if this fails, stored demo vectors and expectations elsewhere break.
        let v = embed_text("hello", 8);
        let nonzero: Vec<(usize, f32)> = v.iter().copied().enumerate().filter(|&(_, x)| x != 0.0).collect();
        assert_eq!(nonzero.len(), 1);
        assert_eq!(fnv1a_64(b"hello"), 0xa430_d846_80aa_bd0b);
        let h = fmix64(fnv1a_64(b"hello"));
        let bucket = ((u128::from(h) * 8) >> 64) as usize;
        let sign = if h & 1 == 0 { 1.0 } else { -1.0 };
        assert_eq!(nonzero[0], (bucket, sign));
    }

    fn fnv1a_64(bytes: &[u8]) -> u64 {
        bytes.iter().fold(FNV_OFFSET_BASIS, |h, &b| fnv1a_byte(h, b))
    }

    #[test]
    fn case_and_punctuation_do_not_matter() {
        assert_eq!(embed_text("Hello, WORLD!", 64), embed_text("hello world", 64));
        assert_eq!(embed_text("STRASSE Ärger", 64), embed_text("strasse ärger", 64));
    }

    #[test]
    fn shared_words_are_closer_than_unrelated_text() {
        let query = embed_text("how do I reset my password", 384);
        let related = embed_text("To reset your password, open the account page.", 384);
        let unrelated = embed_text("Bananas grow in tropical climates.", 384);
        assert!(cosine(&query, &related) > cosine(&query, &unrelated) + 0.2);
        // Two shared words out of 6 and 8: 2 / sqrt(6 * 8) ≈ 0.29 unless buckets collide.
        assert!(cosine(&query, &related) > 0.25);
    }

    #[test]
    fn stop_words_do_not_count() {
        assert_eq!(embed_text("the ledger of the mill", 64), embed_text("ledger mill", 64));
        // Only stop words: the same fallback as an empty text.
        assert_eq!(embed_text("and the of it", 64), embed_text("", 64));
        assert_eq!(STOP_HASHES.len(), STOP_WORDS.len());
        assert!(STOP_HASHES.windows(2).all(|w| w[0] < w[1]), "sorted and distinct");
    }

    #[test]
    fn texts_without_tokens_get_a_unit_vector() {
        for text in ["", "   ", "!?., --"] {
            let (v, tokens) = {
                let mut v = vec![0.0; 16];
                let tokens = embed_into(text, &mut v);
                (v, tokens)
            };
            assert_eq!(tokens, 0);
            assert_eq!(v[0], 1.0);
            assert!((norm(&v) - 1.0).abs() < 1e-6);
        }
    }

    #[test]
    fn one_dimension_works() {
        let v = embed_text("anything at all", 1);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].abs(), 1.0);
    }

    #[test]
    fn counts_word_tokens() {
        let mut v = vec![0.0; 8];
        assert_eq!(embed_into("one, two three-four  5", &mut v), 5);
        assert_eq!(embed_into("trailing", &mut v), 1);
    }

    #[test]
    fn buffer_is_reset_between_calls() {
        let mut v = vec![0.0; 32];
        embed_into("first text here", &mut v);
        embed_into("second", &mut v);
        assert_eq!(v, embed_text("second", 32));
    }
}
