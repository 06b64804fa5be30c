//! Embeddings per second through the HTTP server, for requests of 1, 8 and 32 chunks of ~1,000 characters of
//! prose (the sample corpus), and the latency of one request alone. Run it in a release build:
//!
//! ```sh
//! bash scripts/fetch-model.sh
//! cargo run --release -p quern-embedder --example model_speed [-- --workers 2 --threads-per-pass 1 --seconds 20]
//! ```

use std::time::{Duration, Instant};

use clap::Parser;
use quern_embedder::{EmbedderConfig, RunningEmbedder};
use serde_json::json;

#[derive(Debug, Parser)]
struct Args {
    /// Forward passes at once [default: the number of cores].
    #[arg(long)]
    workers: Option<usize>,
    /// Threads candle uses inside one pass.
    #[arg(long, default_value_t = 1)]
    threads_per_pass: usize,
    /// Seconds of load per batch size.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Requests timed one at a time for the latency figure.
    #[arg(long, default_value_t = 10)]
    latency_samples: usize,
}

/// ~1,000-character chunks of the sample corpus, cut at spaces.
fn chunks() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../corpus/austen-persuasion");
    let mut files: Vec<_> = std::fs::read_dir(&dir).expect("the sample corpus").map(|e| e.unwrap().path()).collect();
    files.sort();
    let mut chunks = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).unwrap();
        let words: Vec<&str> = text.split_whitespace().collect();
        let mut chunk = String::new();
        for word in words {
            if chunk.len() + word.len() >= 1000 {
                chunks.push(std::mem::take(&mut chunk));
            }
            if !chunk.is_empty() {
                chunk.push(' ');
            }
            chunk.push_str(word);
        }
    }
    chunks
}

async fn request(client: &reqwest::Client, server: &RunningEmbedder, texts: &[String]) -> Duration {
    let started = Instant::now();
    let body = json!({"model": "all-MiniLM-L6-v2", "input": texts, "encoding_format": "base64"});
    let response = client.post(format!("{}/v1/embeddings", server.url())).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    response.bytes().await.unwrap();
    started.elapsed()
}

async fn run(args: Args) {
    let chunks = chunks();
    let workers = args.workers.unwrap_or_else(quern_embedder::config::default_workers);
    let config = EmbedderConfig { workers, max_queued_inputs: 1024, ..Default::default() };
    let server = quern_embedder::spawn(config).await.expect("the model (bash scripts/fetch-model.sh)");
    let embedder = quern_embedder::Embedder::load(&quern_embedder::default_model_dir()).unwrap();
    let tokens: usize = chunks.iter().map(|c| embedder.tokenize(c).unwrap().len()).sum();
    let chars: usize = chunks.iter().map(|c| c.chars().count()).sum();
    println!(
        "{} chunks, {} characters and {} tokens each on average; {workers} workers x {} thread(s) per pass",
        chunks.len(),
        chars / chunks.len(),
        tokens / chunks.len(),
        args.threads_per_pass
    );
    let client = reqwest::Client::new();
    request(&client, &server, &chunks[..4]).await; // warm-up

    let mut latencies = Vec::new();
    for i in 0..args.latency_samples {
        latencies.push(request(&client, &server, &chunks[i % chunks.len()..][..1]).await);
    }
    latencies.sort();
    println!("one request of 1 chunk, alone: median {:?}, min {:?}", latencies[latencies.len() / 2], latencies[0]);

    println!("{:>5} {:>9} {:>9} {:>13} {:>13}", "batch", "in flight", "requests", "embeddings/s", "mean latency");
    for batch in [1usize, 8, 32] {
        // Enough requests in flight that every worker always has a group to take.
        let in_flight = (2 * workers).div_ceil(batch.div_ceil(4)).max(2);
        let deadline = Instant::now() + Duration::from_secs(args.seconds);
        let started = Instant::now();
        let tasks: Vec<_> = (0..in_flight)
            .map(|lane| {
                let (client, chunks) = (client.clone(), chunks.clone());
                let url_server = server.url();
                tokio::spawn(async move {
                    let mut done = Vec::new();
                    let mut next = lane * batch;
                    while Instant::now() < deadline {
                        let texts: Vec<String> =
                            (0..batch).map(|i| chunks[(next + i) % chunks.len()].clone()).collect();
                        next += batch * in_flight;
                        let begun = Instant::now();
                        let body = json!({"model": "all-MiniLM-L6-v2", "input": texts, "encoding_format": "base64"});
                        let response =
                            client.post(format!("{url_server}/v1/embeddings")).json(&body).send().await.unwrap();
                        assert_eq!(response.status(), 200);
                        response.bytes().await.unwrap();
                        done.push(begun.elapsed());
                    }
                    done
                })
            })
            .collect();
        let mut done = Vec::new();
        for task in tasks {
            done.extend(task.await.unwrap());
        }
        let elapsed = started.elapsed().as_secs_f64();
        let mean = done.iter().sum::<Duration>() / done.len().max(1) as u32;
        let rate = (done.len() * batch) as f64 / elapsed;
        println!("{batch:>5} {in_flight:>9} {:>9} {rate:>13.1} {mean:>13.2?}", done.len());
    }
    server.shutdown().await.unwrap();
}

fn main() {
    let args = Args::parse();
    // Before the runtime starts its threads (see set_threads_per_pass).
    quern_embedder::set_threads_per_pass(args.threads_per_pass);
    tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(run(args));
}
