//! Limits on one job, so a huge or hostile document cannot exhaust a worker: past one, the job is
//! dead-lettered with the limit named.

/// Largest job a worker accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest message body, in bytes.
    pub max_message_bytes: usize,
    /// Largest document, in characters.
    pub max_document_chars: usize,
    /// Most chunks one document may make.
    pub max_chunks: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_message_bytes: 16 * 1024 * 1024, max_document_chars: 5_000_000, max_chunks: 10_000 }
    }
}

/// A limit a job exceeds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitExceeded {
    /// The body is too large.
    #[error("message body is {actual} bytes, over the limit of {limit} (max_message_bytes)")]
    MessageBytes {
        /// Size of the body.
        actual: usize,
        /// The limit.
        limit: usize,
    },
    /// The document is too long.
    #[error("document has {actual} characters, over the limit of {limit} (max_document_chars)")]
    DocumentChars {
        /// Characters in the text (counted up to the limit + 1).
        actual: usize,
        /// The limit.
        limit: usize,
    },
    /// The document makes too many chunks.
    #[error("document makes {actual} chunks, over the limit of {limit} (max_chunks)")]
    Chunks {
        /// Chunks made.
        actual: usize,
        /// The limit.
        limit: usize,
    },
}

impl LimitExceeded {
    /// Short machine-readable cause for dead-letter headers.
    pub fn reason(&self) -> &'static str {
        match self {
            LimitExceeded::MessageBytes { .. } => "limit_message_bytes",
            LimitExceeded::DocumentChars { .. } => "limit_document_chars",
            LimitExceeded::Chunks { .. } => "limit_chunks",
        }
    }
}

impl Limits {
    /// Checks the body size before anything is parsed.
    pub fn check_message(&self, bytes: usize) -> Result<(), LimitExceeded> {
        if bytes > self.max_message_bytes {
            return Err(LimitExceeded::MessageBytes { actual: bytes, limit: self.max_message_bytes });
        }
        Ok(())
    }

    /// Checks the document's length in characters.
    pub fn check_document(&self, text: &str) -> Result<(), LimitExceeded> {
        // Bytes bound characters from above: most documents pass without counting.
        if text.len() > self.max_document_chars {
            let chars = text.chars().count();
            if chars > self.max_document_chars {
                return Err(LimitExceeded::DocumentChars { actual: chars, limit: self.max_document_chars });
            }
        }
        Ok(())
    }

    /// Checks the number of chunks.
    pub fn check_chunks(&self, chunks: usize) -> Result<(), LimitExceeded> {
        if chunks > self.max_chunks {
            return Err(LimitExceeded::Chunks { actual: chunks, limit: self.max_chunks });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_limit_names_itself() {
        let limits = Limits { max_message_bytes: 10, max_document_chars: 3, max_chunks: 2 };
        assert!(limits.check_message(10).is_ok());
        assert!(limits.check_message(11).expect_err("over").to_string().contains("max_message_bytes"));
        assert!(limits.check_document("ééé").is_ok(), "6 bytes but 3 characters");
        assert!(limits.check_document("abcd").expect_err("over").to_string().contains("max_document_chars"));
        assert_eq!(limits.check_chunks(3).expect_err("over").reason(), "limit_chunks");
    }
}
