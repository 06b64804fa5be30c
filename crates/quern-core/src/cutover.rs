//! Cut-over routing, sticky per document: which documents a producer sends to Quern at a percentage (the rest
//! going through a legacy ingestion path). The same rule in every producer (Rust, Python, TypeScript), checked
//! against the vectors of `schema/examples/cutover.json`, so a document goes the same way from every web tier.

use sha2::{Digest, Sha256};

/// Buckets a document may fall in: a percentage is a threshold over them, to two decimals of a percent.
pub const BUCKETS: u64 = 10_000;

/// The document's bucket, 0..10,000: the first 8 bytes (big-endian) of SHA-256 over the UTF-8 collection, one
/// 0x00 byte and the UTF-8 document id, modulo 10,000.
pub fn cutover_bucket(collection: &str, document_id: &str) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(collection.as_bytes());
    hasher.update([0u8]);
    hasher.update(document_id.as_bytes());
    let digest = hasher.finalize();
    let head: [u8; 8] = digest[..8].try_into().expect("SHA-256 has 32 bytes");
    u64::from_be_bytes(head) % BUCKETS
}

/// Whether the document goes to Quern at `percent` (0 to 100; values outside are clamped): its bucket is below
/// `percent × 100`, rounded half up as the other producers round.
pub fn goes_to_quern(collection: &str, document_id: &str, percent: f64) -> bool {
    let threshold = (percent.clamp(0.0, 100.0) * 100.0 + 0.5).floor() as u64;
    cutover_bucket(collection, document_id) < threshold
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shared_vectors_give_their_buckets() {
        let vectors: serde_json::Value =
            serde_json::from_str(include_str!("../../../schema/examples/cutover.json")).expect("valid JSON");
        let cases = vectors["cases"].as_array().expect("cases");
        assert!(cases.len() >= 8);
        for case in cases {
            let (collection, document_id) =
                (case["collection"].as_str().unwrap(), case["document_id"].as_str().unwrap());
            assert_eq!(cutover_bucket(collection, document_id), case["bucket"].as_u64().unwrap(), "{case}");
        }
    }

    #[test]
    fn a_raise_moves_only_the_documents_in_between() {
        let ids: Vec<String> = (0..10_000).map(|n| n.to_string()).collect();
        let at = |percent: f64| ids.iter().filter(|id| goes_to_quern("articles", id, percent)).count();
        assert!((2_700..=3_300).contains(&at(30.0)), "{}", at(30.0));
        assert_eq!((at(0.0), at(100.0)), (0, 10_000));
        for id in &ids {
            if goes_to_quern("articles", id, 30.0) {
                assert!(goes_to_quern("articles", id, 50.0), "{id} moved back");
            }
        }
    }
}
