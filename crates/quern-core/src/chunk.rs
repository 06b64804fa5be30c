//! Splitting a document into overlapping chunks measured in characters, on semantic boundaries, via `text-splitter`.

use text_splitter::{ChunkConfig, ChunkConfigError, TextSplitter};

/// Default largest chunk, in characters.
pub const DEFAULT_MAX_CHARS: usize = 1000;
/// Default overlap between neighbouring chunks, in characters.
pub const DEFAULT_OVERLAP_CHARS: usize = 200;

/// Splits text into chunks of at most `max_chars` characters, neighbours sharing up to `overlap_chars`.
///
/// Chunks are `&str` slices cut at grapheme boundaries or coarser (sentences, lines, paragraphs), so a
/// multi-byte character or a base letter with its combining marks is never split. Leading and trailing
/// whitespace is trimmed from each chunk, so an empty or blank document has no chunks.
#[derive(Debug)]
pub struct Chunker {
    splitter: TextSplitter<text_splitter::Characters>,
    max_chars: usize,
    overlap_chars: usize,
}

/// The chunk size settings cannot work together.
#[derive(Debug, thiserror::Error)]
pub enum ChunkerError {
    /// `max_chars` must be at least 1.
    #[error("chunk size must be at least 1 character")]
    ZeroSize,
    /// The overlap must be smaller than the chunk.
    #[error("chunk overlap ({overlap}) must be smaller than the chunk size ({max})")]
    OverlapTooLarge {
        /// Requested overlap.
        overlap: usize,
        /// Requested chunk size.
        max: usize,
    },
}

impl Chunker {
    /// Builds a chunker, refusing settings that cannot produce chunks.
    pub fn new(max_chars: usize, overlap_chars: usize) -> Result<Chunker, ChunkerError> {
        if max_chars == 0 {
            return Err(ChunkerError::ZeroSize);
        }
        let config = ChunkConfig::new(max_chars)
            .with_overlap(overlap_chars)
            .map_err(|_: ChunkConfigError| ChunkerError::OverlapTooLarge { overlap: overlap_chars, max: max_chars })?;
        Ok(Chunker { splitter: TextSplitter::new(config), max_chars, overlap_chars })
    }

    /// The chunks of `text`, in document order.
    pub fn split<'t>(&self, text: &'t str) -> Vec<&'t str> {
        self.splitter.chunks(text).collect()
    }

    /// The chunks of `text` with their byte offsets, in document order.
    pub fn split_with_offsets<'t>(&self, text: &'t str) -> Vec<(usize, &'t str)> {
        self.splitter.chunk_indices(text).collect()
    }

    /// Largest chunk, in characters.
    pub fn max_chars(&self) -> usize {
        self.max_chars
    }

    /// Overlap between neighbours, in characters.
    pub fn overlap_chars(&self) -> usize {
        self.overlap_chars
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn empty_and_blank_documents_have_no_chunks() {
        let chunker = Chunker::new(100, 20).expect("valid");
        assert!(chunker.split("").is_empty());
        assert!(chunker.split("  \n\t ").is_empty());
    }

    #[test]
    fn invalid_settings_are_refused() {
        assert!(matches!(Chunker::new(0, 0), Err(ChunkerError::ZeroSize)));
        assert!(matches!(Chunker::new(10, 10), Err(ChunkerError::OverlapTooLarge { .. })));
    }

    #[test]
    fn multibyte_text_is_never_split_inside_a_character() {
        // CJK, emoji with a ZWJ sequence and skin tone, combining marks: all multi-byte.
        let text = "漢字かな交じり文。👩‍👩‍👧‍👦 family 👍🏽 e\u{301}e\u{301}e\u{301} ñ\u{303} 한국어 텍스트 ".repeat(40);
        let chunker = Chunker::new(17, 5).expect("valid");
        let chunks = chunker.split_with_offsets(&text);
        assert!(chunks.len() > 10);
        for (offset, chunk) in chunks {
            assert!(text.is_char_boundary(offset));
            assert!(chunk.chars().count() <= 17, "chunk too long: {chunk:?}");
            // A chunk never starts with a combining mark torn from its base letter.
            assert!(!chunk.starts_with('\u{301}') && !chunk.starts_with('\u{303}'), "{chunk:?}");
            // Nor with a ZWJ or skin-tone modifier torn from its emoji.
            assert!(!chunk.starts_with('\u{200d}') && !chunk.starts_with('\u{1f3fd}'), "{chunk:?}");
        }
    }

    #[test]
    fn neighbouring_chunks_overlap() {
        let text = (0..400).map(|i| format!("word{i}")).collect::<Vec<_>>().join(" ");
        let chunker = Chunker::new(100, 30).expect("valid");
        let chunks = chunker.split_with_offsets(&text);
        for pair in chunks.windows(2) {
            let (start_a, a) = pair[0];
            let (start_b, _) = pair[1];
            let end_a = start_a + a.len();
            assert!(start_b < end_a, "chunks at {start_a} and {start_b} do not overlap");
            assert!(end_a - start_b <= 30, "overlap {} exceeds 30", end_a - start_b);
        }
    }

    proptest! {
        #[test]
        fn chunks_cover_the_input_in_order_within_size(
            text in "[a-zé漢 .\n]{0,600}",
            max in 5usize..80,
            overlap_fraction in 0usize..4,
        ) {
            let overlap = max * overlap_fraction / 5;
            let chunker = Chunker::new(max, overlap).expect("valid");
            let chunks = chunker.split_with_offsets(&text);
            let mut covered_to = 0;
            let mut last_start = None;
            for (offset, chunk) in &chunks {
                prop_assert!(chunk.chars().count() <= max);
                prop_assert_eq!(&text[*offset..*offset + chunk.len()], *chunk);
                if let Some(last) = last_start { prop_assert!(*offset > last); }
                // Everything skipped between chunks is whitespace trimmed away.
                if *offset > covered_to {
                    prop_assert!(text[covered_to..*offset].trim().is_empty());
                }
                covered_to = covered_to.max(offset + chunk.len());
                last_start = Some(*offset);
            }
            prop_assert!(text[covered_to..].trim().is_empty());
        }
    }
}
