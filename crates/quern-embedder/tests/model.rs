//! The model against sentence-transformers' published results, and the properties the server relies on: unit
//! vectors of 384, padding that changes nothing, and truncation at 256 tokens instead of a refusal.

mod common;

use common::{cosine, embedder, max_diff, one_token_words};

#[test]
fn reproduces_the_sentence_transformers_quickstart_similarities() {
    // https://sbert.net quickstart, all-MiniLM-L6-v2: model.similarity(embeddings, embeddings).
    let sentences = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."];
    let vectors = embedder().embed(&sentences).unwrap();
    for (a, b, published) in [(0, 1, 0.6660f32), (0, 2, 0.1046), (1, 2, 0.1411)] {
        let got = cosine(&vectors[a], &vectors[b]);
        assert!((got - published).abs() < 1e-4, "cos({a}, {b}) = {got}, published {published}");
    }
}

#[test]
fn vectors_have_384_dimensions_and_unit_length() {
    let model = embedder();
    assert_eq!(model.dim(), 384);
    assert_eq!(model.max_tokens(), 256);
    let long = one_token_words(600);
    let texts = ["x", "Straße, café and naïve — ünïcödé 東京 🚀", "   spaced   out   ", long.as_str()];
    for (text, vector) in texts.iter().zip(model.embed(&texts).unwrap()) {
        assert_eq!(vector.len(), 384, "{text:?}");
        let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{text:?}: norm {norm}");
        assert!(vector.iter().all(|x| x.is_finite()), "{text:?}");
    }
}

#[test]
fn a_text_embeds_the_same_alone_and_padded_among_longer_ones() {
    let model = embedder();
    let short = "The weather is lovely today.";
    let medium = one_token_words(60);
    let long = one_token_words(250);
    let alone = model.embed(&[short]).unwrap().remove(0);
    let ids: Vec<Vec<u32>> =
        [long.as_str(), short, medium.as_str()].iter().map(|t| model.tokenize(t).unwrap()).collect();
    // One forward pass, the short text padded from 9 tokens to 252.
    let batch: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
    let padded = model.embed_tokens(&batch).unwrap();
    let diff = max_diff(&alone, &padded[384..768]);
    assert!(diff < 1e-5, "padding changed the vector by {diff}");
    // And through the grouping `embed` does, in input order.
    let grouped = model.embed(&[long.as_str(), short, medium.as_str()]).unwrap();
    assert!(max_diff(&alone, &grouped[1]) < 1e-5);
    assert!(max_diff(&padded[..384], &grouped[0]) < 1e-5);
}

#[test]
fn a_text_longer_than_256_tokens_is_cut_to_its_first_256() {
    let model = embedder();
    for word in ["the", "cat", "house", "with"] {
        assert_eq!(model.tokenize(word).unwrap().len(), 3, "{word} is one token between [CLS] and [SEP]");
    }
    let long = one_token_words(400);
    // [CLS] + 254 words + [SEP] = 256 tokens.
    let prefix = one_token_words(254);
    let long_ids = model.tokenize(&long).unwrap();
    assert_eq!(long_ids.len(), 256);
    assert_eq!(long_ids, model.tokenize(&prefix).unwrap(), "truncation keeps the first tokens and ends with [SEP]");
    let vectors = model.embed(&[long.as_str(), prefix.as_str()]).unwrap();
    assert!(max_diff(&vectors[0], &vectors[1]) < 1e-6);
    // The cut is real: one word fewer is another input.
    let shorter = one_token_words(253);
    assert!(max_diff(&vectors[0], &model.embed(&[shorter.as_str()]).unwrap()[0]) > 1e-4);
}

#[test]
fn a_missing_model_names_the_file_and_the_script() {
    let empty = std::env::temp_dir().join(format!("quern-embedder-no-model-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let err = quern_embedder::Embedder::load(&empty).unwrap_err().to_string();
    assert!(err.contains("config.json is missing") && err.contains("bash scripts/fetch-model.sh"), "{err}");
    assert!(!err.contains('\n'), "one line: {err}");
    std::fs::remove_dir_all(&empty).unwrap();
}
