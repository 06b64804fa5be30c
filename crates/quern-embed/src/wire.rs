//! The OpenAI-compatible `/v1/embeddings` request and response bodies, shared by the client and the two servers
//! (`quern-embedder`, `quern-fake-embedder`), which write the response with [`render_response`].

use base64::Engine;
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Request body as the client sends it (borrowed, so batching copies no text).
#[derive(Debug, Serialize)]
pub struct EmbeddingRequestRef<'a> {
    /// Model name the provider should use.
    pub model: &'a str,
    /// Texts to embed, answered in the same order.
    pub input: &'a [&'a str],
    /// `base64` or `float`: see [`VectorEncoding`].
    pub encoding_format: &'static str,
}

/// Request body as a server receives it; OpenAI accepts one string or an array of strings.
#[derive(Debug, Deserialize)]
pub struct EmbeddingRequest {
    /// Model name.
    pub model: String,
    /// One text or many.
    pub input: EmbeddingInput,
    /// `float` (the default) or `base64`.
    #[serde(default)]
    pub encoding_format: Option<String>,
}

/// How the provider is asked to encode vectors in its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VectorEncoding {
    /// Base64 of little-endian `f32`s, as OpenAI's own client asks for: a quarter fewer bytes than decimal
    /// text and no float parsing, which is most of the worker's JSON work at dimension 384 and more above.
    /// A server that ignores the parameter answers with numbers, which are read as well.
    #[default]
    Base64,
    /// Arrays of decimal numbers, for a server that refuses `base64`.
    Float,
}

impl VectorEncoding {
    /// The `encoding_format` value.
    pub fn as_str(self) -> &'static str {
        match self {
            VectorEncoding::Base64 => "base64",
            VectorEncoding::Float => "float",
        }
    }
}

/// Encodes a vector as OpenAI's `base64` format does.
pub fn encode_base64(vector: &[f32]) -> String {
    let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// An `embedding` given as an array of numbers or as base64 of little-endian `f32`s.
fn numbers_or_base64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<f32>, D::Error> {
    struct Embedding;
    impl<'de> serde::de::Visitor<'de> for Embedding {
        type Value = Vec<f32>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an array of numbers or a base64 string")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<f32>, A::Error> {
            let mut vector = Vec::with_capacity(seq.size_hint().unwrap_or(0));
            while let Some(x) = seq.next_element::<f32>()? {
                vector.push(x);
            }
            Ok(vector)
        }

        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Vec<f32>, E> {
            let bytes = base64::engine::general_purpose::STANDARD.decode(text).map_err(E::custom)?;
            if bytes.len() % 4 != 0 {
                return Err(E::custom(format!("{} base64 bytes are not a whole number of f32s", bytes.len())));
            }
            Ok(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
        }
    }
    deserializer.deserialize_any(Embedding)
}

/// `input` as one string or many.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingInput {
    /// A single text.
    One(String),
    /// A batch of texts.
    Many(Vec<String>),
}

impl EmbeddingInput {
    /// The texts, in order.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            EmbeddingInput::One(text) => vec![text],
            EmbeddingInput::Many(texts) => texts,
        }
    }
}

/// Response body.
#[derive(Debug, Serialize, Deserialize)]
pub struct EmbeddingResponse {
    /// One entry per input; `index` says which.
    pub data: Vec<EmbeddingData>,
    /// Model that answered.
    #[serde(default)]
    pub model: String,
    /// Token accounting, when the provider reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<EmbeddingUsage>,
}

/// One embedding.
#[derive(Debug, Serialize, Deserialize)]
pub struct EmbeddingData {
    /// Position of the input this vector belongs to.
    pub index: usize,
    /// The vector (sent as numbers; read from numbers or base64).
    #[serde(deserialize_with = "numbers_or_base64")]
    pub embedding: Vec<f32>,
}

/// Token counts reported by the provider.
#[derive(Debug, Serialize, Deserialize)]
pub struct EmbeddingUsage {
    /// Tokens in the inputs.
    pub prompt_tokens: u64,
    /// Tokens billed.
    pub total_tokens: u64,
}

/// A server's response body for `vectors` (`n × dim` floats, in input order): OpenAI's shape, with its `object`
/// fields, each vector as numbers or (`base64`) as base64 of its little-endian `f32`s, echoing the `model` the client
/// named. Serialised straight from the flat buffer, so no `Vec` per input is built.
pub fn render_response(
    vectors: &[f32],
    dim: usize,
    model: &str,
    base64: bool,
    usage: EmbeddingUsage,
) -> serde_json::Result<Vec<u8>> {
    let response = ResponseBody { object: "list", data: DataList { vectors, dim: dim.max(1), base64 }, model, usage };
    // A unit-vector component prints in at most ~13 bytes ("-0.012345678,").
    let mut body = Vec::with_capacity(vectors.len() * 13 + vectors.len() / dim.max(1) * 48 + model.len() + 128);
    serde_json::to_writer(&mut body, &response)?;
    Ok(body)
}

#[derive(Serialize)]
struct ResponseBody<'a> {
    object: &'static str,
    data: DataList<'a>,
    model: &'a str,
    usage: EmbeddingUsage,
}

/// The `data` array, one entry per `dim`-sized slice of the flat buffer.
struct DataList<'a> {
    vectors: &'a [f32],
    dim: usize,
    base64: bool,
}

#[derive(Serialize)]
struct DataEntry<'a> {
    object: &'static str,
    index: usize,
    embedding: RenderedVector<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum RenderedVector<'a> {
    Numbers(&'a [f32]),
    Base64(String),
}

impl Serialize for DataList<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.vectors.len() / self.dim))?;
        for (index, vector) in self.vectors.chunks_exact(self.dim).enumerate() {
            let embedding = if self.base64 {
                RenderedVector::Base64(encode_base64(vector))
            } else {
                RenderedVector::Numbers(vector)
            };
            seq.serialize_element(&DataEntry { object: "embedding", index, embedding })?;
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_embedding_reads_from_numbers_or_base64_alike() {
        let vector = [0.25f32, -1.5, 3.0e-7, 0.0];
        let numbers = format!(r#"{{"data":[{{"index":0,"embedding":{}}}]}}"#, serde_json::to_string(&vector).unwrap());
        let base64 = format!(r#"{{"data":[{{"index":0,"embedding":"{}"}}]}}"#, encode_base64(&vector));
        for body in [numbers, base64] {
            let parsed: EmbeddingResponse = serde_json::from_str(&body).unwrap();
            assert_eq!(parsed.data[0].embedding, vector, "{body}");
        }
    }

    #[test]
    fn a_base64_embedding_that_is_not_whole_floats_is_an_error() {
        for embedding in [r#""AAAA""#, r#""not base64!""#, "17"] {
            let body = format!(r#"{{"data":[{{"index":0,"embedding":{embedding}}}]}}"#);
            assert!(serde_json::from_str::<EmbeddingResponse>(&body).is_err(), "{body}");
        }
    }
}
