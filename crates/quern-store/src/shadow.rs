//! Parity of a shadow run: what the legacy worker stored in its own table against what Quern's shadow run stored in
//! its schema, per document. [`Store::shadow_documents`] reads both sides (a deterministic sample when asked);
//! [`compare`] judges each document (missing on a side, chunk counts, chunk texts, embedding cosine) and sums up.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{Store, StoreError};

/// The database schema of a shadow run (`quern-worker --shadow`) when `--database-schema` names none: its tables
/// stay apart from the production collections' and the legacy worker's.
pub const SHADOW_SCHEMA: &str = "quern_shadow";

/// Where the legacy worker's chunks are: a table and the names of its columns.
#[derive(Debug, Clone)]
pub struct LegacyTable {
    table: String,
    collection: String,
    document_id: String,
    chunk_index: String,
    content: String,
    embedding: Option<String>,
}

/// The column names of a legacy table, as given (unquoted).
#[derive(Debug, Clone)]
pub struct LegacyColumns {
    /// The collection (any type; compared as text).
    pub collection: String,
    /// The document id (any type; compared as text).
    pub document_id: String,
    /// The chunk's position in its document, from 0 or 1 (the order is what counts).
    pub chunk_index: String,
    /// The chunk's text.
    pub content: String,
    /// The chunk's vector (`vector`, `halfvec`, `real[]` or `float8[]`); `None` compares no embeddings.
    pub embedding: Option<String>,
}

impl Default for LegacyColumns {
    fn default() -> Self {
        LegacyColumns {
            collection: "collection".into(),
            document_id: "document_id".into(),
            chunk_index: "chunk_index".into(),
            content: "content".into(),
            embedding: Some("embedding".into()),
        }
    }
}

impl LegacyTable {
    /// The table `table` (`name` or `schema.name`) with `columns`; every name is checked to be an identifier and
    /// quoted, so none can inject SQL.
    pub fn new(table: &str, columns: &LegacyColumns) -> Result<LegacyTable, StoreError> {
        let parts: Vec<&str> = table.split('.').collect();
        if parts.len() > 2 {
            return Err(StoreError::Config(format!("legacy table `{table}` must be `table` or `schema.table`")));
        }
        let table = parts.iter().map(|part| quote(part, "legacy table")).collect::<Result<Vec<_>, _>>()?.join(".");
        Ok(LegacyTable {
            table,
            collection: quote(&columns.collection, "collection column")?,
            document_id: quote(&columns.document_id, "document id column")?,
            chunk_index: quote(&columns.chunk_index, "chunk index column")?,
            content: quote(&columns.content, "content column")?,
            embedding: columns.embedding.as_deref().map(|name| quote(name, "embedding column")).transpose()?,
        })
    }
}

/// `name` double-quoted, if it is a plain identifier (letters, digits, `_`, `$`; not starting with a digit).
fn quote(name: &str, what: &str) -> Result<String, StoreError> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && !name.as_bytes()[0].is_ascii_digit()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$');
    if valid {
        Ok(format!("\"{name}\""))
    } else {
        Err(StoreError::Config(format!("{what} `{name}` is not a plain SQL identifier")))
    }
}

/// One chunk as either side stored it.
#[derive(Debug, Clone, PartialEq)]
pub struct SideChunk {
    /// Its text.
    pub content: String,
    /// Its vector, when compared.
    pub embedding: Option<Vec<f32>>,
}

/// One document on both sides: `None` where a side does not have it; chunks in their order.
#[derive(Debug, Clone, PartialEq)]
pub struct DocumentSides {
    /// The collection.
    pub collection: String,
    /// The document id.
    pub document_id: String,
    /// The legacy worker's chunks.
    pub legacy: Option<Vec<SideChunk>>,
    /// The shadow run's chunks.
    pub shadow: Option<Vec<SideChunk>>,
}

/// What is different about one document.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Difference {
    /// The legacy worker stored it; the shadow run did not.
    MissingInShadow,
    /// The shadow run stored it; the legacy worker did not.
    MissingInLegacy,
    /// Both stored it, in different numbers of chunks.
    ChunkCount {
        /// The legacy worker's count.
        legacy: usize,
        /// The shadow run's count.
        shadow: usize,
    },
    /// Chunks at the same position hold different texts.
    Text {
        /// How many positions differ.
        chunks: usize,
        /// The first of them (from 0).
        first: usize,
    },
    /// Chunks' vectors point in different directions: cosine below the threshold.
    Embedding {
        /// The lowest cosine of the document's chunk pairs.
        lowest_cosine: f64,
    },
}

impl Difference {
    /// How bad it is, for ordering the worst documents first.
    fn weight(&self) -> f64 {
        match self {
            Difference::MissingInShadow | Difference::MissingInLegacy => 1_000_000.0,
            Difference::ChunkCount { legacy, shadow } => 10_000.0 + legacy.abs_diff(*shadow) as f64,
            Difference::Text { chunks, .. } => 100.0 + *chunks as f64,
            Difference::Embedding { lowest_cosine } => 1.0 - lowest_cosine,
        }
    }

    /// In words, for the text report.
    pub fn describe(&self) -> String {
        match self {
            Difference::MissingInShadow => "missing in the shadow".into(),
            Difference::MissingInLegacy => "missing in the legacy table".into(),
            Difference::ChunkCount { legacy, shadow } => format!("{legacy} chunks in legacy, {shadow} in the shadow"),
            Difference::Text { chunks, first } => format!("{chunks} chunk texts differ (first: chunk {first})"),
            Difference::Embedding { lowest_cosine } => format!("embeddings differ (lowest cosine {lowest_cosine:.4})"),
        }
    }
}

/// One document that is not at parity.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DocumentDifference {
    /// The collection.
    pub collection: String,
    /// The document id.
    pub document_id: String,
    /// What differs.
    pub differences: Vec<Difference>,
}

/// The verdict over every document compared.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParityReport {
    /// Documents compared (on either side, or both; the sample when one was asked for).
    pub documents_compared: usize,
    /// Documents on both sides with the same chunks (and embeddings, when compared).
    pub documents_at_parity: usize,
    /// `documents_at_parity` out of `documents_compared`, in percent (100 when nothing was compared).
    pub parity_percent: f64,
    /// Documents only the legacy worker stored.
    pub missing_in_shadow: usize,
    /// Documents only the shadow run stored.
    pub missing_in_legacy: usize,
    /// Documents on both sides with different chunk counts.
    pub chunk_count_differs: usize,
    /// Documents with a chunk text that differs.
    pub text_differs: usize,
    /// Documents with a chunk pair under the cosine threshold.
    pub embedding_differs: usize,
    /// Chunk pairs whose embeddings were compared.
    pub embeddings_compared: usize,
    /// Their mean cosine.
    pub mean_cosine: Option<f64>,
    /// Their lowest cosine.
    pub lowest_cosine: Option<f64>,
    /// Why embeddings were not compared, when they were not.
    pub embeddings_skipped: Option<String>,
    /// The documents furthest from parity, worst first.
    pub worst: Vec<DocumentDifference>,
}

/// Judges each document: at parity when both sides hold it with as many chunks, the same texts (leading and
/// trailing white space aside) and, where both have vectors of one dimension, every pair's cosine at least
/// `min_cosine`. Documents cut into different numbers of chunks differ by that alone (their texts and vectors are
/// not compared position by position). Vectors of different dimensions come from different models: they are not compared, and the
/// report says so. Keeps the `worst` documents furthest from parity.
pub fn compare(documents: &[DocumentSides], min_cosine: f64, worst: usize) -> ParityReport {
    let mut report = ParityReport {
        documents_compared: documents.len(),
        documents_at_parity: 0,
        parity_percent: 100.0,
        missing_in_shadow: 0,
        missing_in_legacy: 0,
        chunk_count_differs: 0,
        text_differs: 0,
        embedding_differs: 0,
        embeddings_compared: 0,
        mean_cosine: None,
        lowest_cosine: None,
        embeddings_skipped: None,
        worst: Vec::new(),
    };
    let mut cosine_sum = 0.0;
    let mut differing: Vec<(f64, DocumentDifference)> = Vec::new();
    for document in documents {
        let mut differences = Vec::new();
        match (&document.legacy, &document.shadow) {
            (Some(_), None) => differences.push(Difference::MissingInShadow),
            (None, Some(_)) => differences.push(Difference::MissingInLegacy),
            (None, None) => {}
            // Cut differently: position by position, texts and vectors would differ for that reason alone.
            (Some(legacy), Some(shadow)) if legacy.len() != shadow.len() => {
                differences.push(Difference::ChunkCount { legacy: legacy.len(), shadow: shadow.len() });
            }
            (Some(legacy), Some(shadow)) => {
                let texts: Vec<usize> =
                    (0..legacy.len()).filter(|&i| legacy[i].content.trim() != shadow[i].content.trim()).collect();
                if let Some(&first) = texts.first() {
                    differences.push(Difference::Text { chunks: texts.len(), first });
                }
                let mut lowest: Option<f64> = None;
                for (l, s) in legacy.iter().zip(shadow) {
                    let (Some(a), Some(b)) = (&l.embedding, &s.embedding) else { continue };
                    if a.len() != b.len() {
                        report.embeddings_skipped = Some(format!(
                            "dimensions differ ({} in legacy, {} in the shadow): different models",
                            a.len(),
                            b.len()
                        ));
                        continue;
                    }
                    let cosine = cosine(a, b);
                    report.embeddings_compared += 1;
                    cosine_sum += cosine;
                    lowest = Some(lowest.map_or(cosine, |low: f64| low.min(cosine)));
                    report.lowest_cosine = Some(report.lowest_cosine.map_or(cosine, |low: f64| low.min(cosine)));
                }
                if let Some(lowest) = lowest.filter(|&low| low < min_cosine) {
                    differences.push(Difference::Embedding { lowest_cosine: lowest });
                }
            }
        }
        for difference in &differences {
            match difference {
                Difference::MissingInShadow => report.missing_in_shadow += 1,
                Difference::MissingInLegacy => report.missing_in_legacy += 1,
                Difference::ChunkCount { .. } => report.chunk_count_differs += 1,
                Difference::Text { .. } => report.text_differs += 1,
                Difference::Embedding { .. } => report.embedding_differs += 1,
            }
        }
        if differences.is_empty() {
            report.documents_at_parity += 1;
        } else {
            let weight = differences.iter().map(Difference::weight).sum();
            let entry = DocumentDifference {
                collection: document.collection.clone(),
                document_id: document.document_id.clone(),
                differences,
            };
            differing.push((weight, entry));
        }
    }
    if report.embeddings_compared > 0 {
        report.mean_cosine = Some(cosine_sum / report.embeddings_compared as f64);
    } else if report.embeddings_skipped.is_none() {
        report.embeddings_skipped = Some("no chunk pair with vectors on both sides".into());
    }
    if report.documents_compared > 0 {
        report.parity_percent = 100.0 * report.documents_at_parity as f64 / report.documents_compared as f64;
    }
    differing.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.document_id.cmp(&b.1.document_id)));
    report.worst = differing.into_iter().take(worst).map(|(_, entry)| entry).collect();
    report
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut dot, mut norm_a, mut norm_b) = (0.0_f64, 0.0_f64, 0.0_f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (f64::from(*x), f64::from(*y));
        dot += x * y;
        norm_a += x * x;
        norm_b += y * y;
    }
    if norm_a == 0.0 || norm_b == 0.0 {
        return if norm_a == norm_b { 1.0 } else { 0.0 };
    }
    dot / (norm_a.sqrt() * norm_b.sqrt())
}

/// One side's chunks of a document, `None` when that side does not have it.
type Side = Option<Vec<SideChunk>>;

/// Documents read per round trip when fetching chunks.
const FETCH_BATCH: usize = 500;

impl Store {
    /// Both sides of each document in the legacy table or the shadow run's schema `shadow_schema` (of
    /// `collection` only, when given): all of them, or a sample of `sample` chosen by a hash of their ids (the
    /// same sample on every run, so reports can be compared over time).
    pub async fn shadow_documents(
        &self,
        legacy: &LegacyTable,
        shadow_schema: &str,
        collection: Option<&str>,
        sample: Option<usize>,
    ) -> Result<Vec<DocumentSides>, StoreError> {
        let shadow = quote(shadow_schema, "shadow schema")?;
        let LegacyTable { table, collection: c, document_id: d, chunk_index: i, content, embedding } = legacy;
        let client = self.client().await?;
        let ids = client
            .query(
                &format!(
                    "SELECT collection, document_id FROM (
                         SELECT {c}::text AS collection, {d}::text AS document_id FROM {table}
                         UNION SELECT collection, document_id FROM {shadow}.quern_documents
                     ) AS documents
                     WHERE $1::text IS NULL OR collection = $1
                     ORDER BY md5(collection || chr(1) || document_id), collection, document_id
                     LIMIT $2"
                ),
                &[&collection, &sample.map(|n| n as i64)],
            )
            .await
            .map_err(StoreError::db("read the documents of the legacy table and the shadow"))?;
        let ids: Vec<(String, String)> = ids.iter().map(|row| (row.get(0), row.get(1))).collect();
        let legacy_vector = embedding.as_deref().map_or("NULL::real[]".to_owned(), |e| format!("{e}::real[]"));
        let shadow_vector = if embedding.is_some() { "embedding::real[]" } else { "NULL::real[]" };
        let legacy_sql = format!(
            "SELECT {c}::text, {d}::text, {content}::text, {legacy_vector} FROM {table}
             WHERE ({c}::text, {d}::text) IN (SELECT * FROM unnest($1::text[], $2::text[]))
             ORDER BY 1, 2, {i}"
        );
        let shadow_sql = format!(
            "SELECT d.collection, d.document_id, c.content, {shadow_vector}
             FROM {shadow}.quern_documents d
             LEFT JOIN {shadow}.quern_chunks c ON c.collection = d.collection AND c.document_id = d.document_id
             WHERE (d.collection, d.document_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))
             ORDER BY 1, 2, c.chunk_index"
        );
        let mut sides: BTreeMap<(String, String), (Side, Side)> =
            ids.iter().map(|id| (id.clone(), (None, None))).collect();
        for batch in ids.chunks(FETCH_BATCH) {
            let collections: Vec<&str> = batch.iter().map(|(c, _)| c.as_str()).collect();
            let documents: Vec<&str> = batch.iter().map(|(_, d)| d.as_str()).collect();
            for (sql, is_legacy) in [(&legacy_sql, true), (&shadow_sql, false)] {
                let rows = client.query(sql.as_str(), &[&collections, &documents]).await.map_err(StoreError::db(
                    if is_legacy { "read the legacy chunks" } else { "read the shadow chunks" },
                ))?;
                for row in rows {
                    let key = (row.get::<_, String>(0), row.get::<_, String>(1));
                    let Some(entry) = sides.get_mut(&key) else { continue };
                    let side = if is_legacy { &mut entry.0 } else { &mut entry.1 };
                    let chunks = side.get_or_insert_with(Vec::new);
                    // A shadow document without chunks (an empty text) joins to one row of NULLs.
                    if let Some(content) = row.get::<_, Option<String>>(2) {
                        chunks.push(SideChunk { content, embedding: row.get(3) });
                    }
                }
            }
        }
        Ok(ids
            .into_iter()
            .map(|key| {
                let (legacy, shadow) = sides.remove(&key).unwrap_or((None, None));
                DocumentSides { collection: key.0, document_id: key.1, legacy, shadow }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(content: &str, embedding: &[f32]) -> SideChunk {
        SideChunk { content: content.into(), embedding: Some(embedding.to_vec()) }
    }

    fn document(id: &str, legacy: Option<Vec<SideChunk>>, shadow: Option<Vec<SideChunk>>) -> DocumentSides {
        DocumentSides { collection: "c".into(), document_id: id.into(), legacy, shadow }
    }

    #[test]
    fn each_kind_of_difference_is_counted_and_the_worst_come_first() {
        let same = || Some(vec![chunk("a", &[1.0, 0.0]), chunk("b ", &[0.0, 1.0])]);
        let documents = vec![
            document("equal", same(), Some(vec![chunk(" a", &[2.0, 0.0]), chunk("b", &[0.0, 1.0])])),
            document("only-legacy", same(), None),
            document("only-shadow", None, same()),
            document("fewer", same(), Some(vec![chunk("a", &[1.0, 0.0])])),
            document("reworded", same(), Some(vec![chunk("a", &[1.0, 0.0]), chunk("B", &[0.0, 1.0])])),
            document("turned", same(), Some(vec![chunk("a", &[1.0, 1.0]), chunk("b", &[0.0, 1.0])])),
        ];
        let report = compare(&documents, 0.99, 3);
        assert_eq!(report.documents_compared, 6);
        assert_eq!(report.documents_at_parity, 1);
        assert!((report.parity_percent - 100.0 / 6.0).abs() < 1e-9);
        assert_eq!((report.missing_in_shadow, report.missing_in_legacy), (1, 1));
        assert_eq!((report.chunk_count_differs, report.text_differs, report.embedding_differs), (1, 1, 1));
        assert_eq!(report.embeddings_compared, 2 + 2 + 2, "pairs of the documents cut alike on both sides");
        assert!((report.lowest_cosine.unwrap() - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-6);
        let worst: Vec<&str> = report.worst.iter().map(|d| d.document_id.as_str()).collect();
        assert_eq!(worst, ["only-legacy", "only-shadow", "fewer"]);
        assert_eq!(report.worst[2].differences, [Difference::ChunkCount { legacy: 2, shadow: 1 }]);
    }

    #[test]
    fn vectors_of_different_models_are_not_compared_and_the_report_says_why() {
        let documents =
            vec![document("d", Some(vec![chunk("a", &[1.0, 0.0, 0.0])]), Some(vec![chunk("a", &[0.0, 1.0])]))];
        let report = compare(&documents, 0.99, 10);
        assert_eq!((report.documents_at_parity, report.embeddings_compared), (1, 0));
        assert!(report.embeddings_skipped.unwrap().contains("3 in legacy, 2 in the shadow"));
        let empty = compare(&[], 0.99, 10);
        assert_eq!((empty.documents_compared, empty.parity_percent), (0, 100.0));
    }

    #[test]
    fn names_that_are_not_identifiers_are_refused() {
        let columns = LegacyColumns::default();
        assert!(LegacyTable::new("app.legacy_chunks", &columns).is_ok());
        for bad in ["chunks; DROP TABLE x", "a.b.c", "\"quoted\"", ""] {
            assert!(LegacyTable::new(bad, &columns).is_err(), "{bad}");
        }
        let bad_column = LegacyColumns { content: "text)".into(), ..LegacyColumns::default() };
        assert!(LegacyTable::new("t", &bad_column).unwrap_err().to_string().contains("content column"));
    }
}
