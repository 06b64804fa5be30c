//! Times the embedder alone on ~1000-character texts: `cargo run --release -p quern-fake-embedder --example embed_speed`.

use std::hint::black_box;
use std::time::Instant;

use quern_fake_embedder::embed_into;

fn main() {
    let words = ["queue", "worker", "Embedding", "vector", "pgvector", "chunk", "Straße", "search"];
    let mut text = String::new();
    let mut i = 0usize;
    while text.len() < 1000 {
        text.push_str(words[i % words.len()]);
        text.push_str(&(i * 7919 % 1000).to_string());
        text.push(' ');
        i += 1;
    }
    let dim = 384;
    let mut out = vec![0.0f32; dim];
    let rounds = 200_000;
    let started = Instant::now();
    let mut tokens = 0;
    for _ in 0..rounds {
        tokens += embed_into(black_box(&text), black_box(&mut out));
    }
    let per_text = started.elapsed() / rounds;
    println!(
        "{} chars, {} tokens, dim {dim}: {per_text:?} per text ({:.0} texts/s on one core)",
        text.len(),
        tokens / rounds as usize,
        1.0 / per_text.as_secs_f64()
    );
}
