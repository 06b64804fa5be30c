//! Content hashes: a document whose hash and embedding model are unchanged needs no new vectors.

use sha2::{Digest, Sha256};

/// Lower-case hex SHA-256 of `text`, as stored in `quern_documents.content_sha256`.
pub fn content_sha256(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest {
        use std::fmt::Write;
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

#[cfg(test)]
mod tests {
    #[test]
    fn matches_known_vector() {
        assert_eq!(super::content_sha256("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
