//! `quern-search-bench`: search quality and speed of the segmented chunk table against a single HNSW index.
//!
//! Generates N vectors (clusters: see [`Vectors`]), writes them twice through Quern's writer path into two
//! databases: one with a maintainer running as the workers run it (seal, bulk build, tiered merges, during the
//! load), one whose rows all go to one segment indexed once at the end (a single table with one HNSW index, the
//! baseline). Then runs the same queries on both through `Store::search` and reports recall@10 against exact
//! search (computed here, in memory) and p50/p95 latency. Run it through `scripts/search-bench.sh`.

use std::time::Instant;

use anyhow::Context;
use chrono::Utc;
use clap::Parser;
use pgvector::Vector;
use quern_core::Job;
use quern_store::{
    ChunkRow, DocumentChange, DocumentCommit, DocumentState, JobVersion, Maintainer, SegmentPolicy, SegmentState,
    Store, StoreConfig, VectorStorage,
};
use quern_testkit::TestDatabase;
use serde_json::json;

#[derive(Debug, Parser)]
#[command(name = "quern-search-bench", about = "Search recall and latency: segments against one HNSW index")]
struct Args {
    /// Vectors (chunks) to load.
    #[arg(long, default_value_t = 100_000)]
    rows: usize,
    /// Dimension.
    #[arg(long, default_value_t = 384)]
    dim: usize,
    /// Queries to run (on each layout: a warm-up pass, then three timed passes; recall from the first).
    #[arg(long, default_value_t = 200)]
    queries: usize,
    /// Clusters the vectors are drawn around.
    #[arg(long, default_value_t = 1000)]
    clusters: usize,
    /// `--segment-rows` of the segmented layout.
    #[arg(long, default_value_t = SegmentPolicy::default().seal_rows)]
    segment_rows: u64,
    /// `--segment-merge-factor` of the segmented layout.
    #[arg(long, default_value_t = SegmentPolicy::default().merge_factor)]
    merge_factor: usize,
    /// Skip the baseline (single index) layout.
    #[arg(long)]
    no_baseline: bool,
    /// Skip the segmented layout (measure the single index alone, e.g. at more `--ef-search` values).
    #[arg(long, conflicts_with = "no_baseline")]
    no_segments: bool,
    /// `hnsw.ef_search` values to measure, comma-separated; 0 is Quern's default (`quern search` without
    /// `--ef-search`: `quern_store::default_ef_search` for each indexed segment, growing with its rows).
    #[arg(long, value_delimiter = ',', default_value = "0,10,20,40")]
    ef_search: Vec<u32>,
    /// How both layouts store vectors: `vector` or `halfvec`.
    #[arg(long, default_value_t = VectorStorage::default())]
    vector_storage: VectorStorage,
    /// `maintenance_work_mem` of every build and merge (e.g. 4GB), as the worker's `--maintenance-work-mem`.
    /// Default: what each graph needs, up to 1 GB; the single index of 1,000,000 rows needs about 2 GB, and its
    /// build slows down several times past what it is given.
    #[arg(long, value_name = "SIZE")]
    maintenance_work_mem: Option<String>,
    /// Keep the two databases (their names are printed), e.g. to look at plans or to measure them again.
    #[arg(long)]
    keep_databases: bool,
    /// Measure the segmented layout in this database, loaded by an earlier run with the same `--rows`, `--dim`
    /// and `--clusters` (`--keep-databases` printed its URL), instead of loading a new one. It is left as it is.
    #[arg(long, value_name = "URL")]
    segments_database: Option<String>,
    /// The same for the single-index layout.
    #[arg(long, value_name = "URL")]
    baseline_database: Option<String>,
}

/// Deterministic vectors in clusters: each is a random unit centroid plus Gaussian noise of norm about 0.7 (so a
/// point's nearest neighbours are mostly, not only, in its own cluster), normalised. Queries are drawn the same way
/// and are not in the data. Uniform random vectors would be unlike any text embedding, and the hardest case for
/// HNSW; real embeddings cluster by topic.
struct Vectors {
    state: u64,
    centroids: Vec<Vec<f32>>,
    dim: usize,
}

impl Vectors {
    fn new(dim: usize, clusters: usize, seed: u64) -> Vectors {
        let mut vectors = Vectors { state: seed, centroids: Vec::new(), dim };
        vectors.centroids = (0..clusters.max(1)).map(|_| vectors.unit(1.0)).collect();
        vectors
    }

    fn next_u64(&mut self) -> u64 {
        // splitmix64
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn gaussian(&mut self) -> f32 {
        // Box-Muller
        let u1 = ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let u2 = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }

    /// A random vector of norm about `norm`.
    fn unit(&mut self, norm: f32) -> Vec<f32> {
        let scale = norm / (self.dim as f32).sqrt();
        (0..self.dim).map(|_| self.gaussian() * scale).collect()
    }

    fn sample(&mut self) -> Vec<f32> {
        let centroid = (self.next_u64() % self.centroids.len() as u64) as usize;
        let noise = self.unit(0.7);
        let mut v: Vec<f32> = self.centroids[centroid].iter().zip(&noise).map(|(c, n)| c + n).collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= norm);
        v
    }
}

/// The `k` rows nearest to `query` by cosine distance (the vectors are unit: the dot product), exactly.
fn exact_top(data: &[Vec<f32>], query: &[f32], k: usize) -> Vec<usize> {
    let mut scored: Vec<(f32, usize)> =
        data.iter().enumerate().map(|(i, v)| (v.iter().zip(query).map(|(a, b)| a * b).sum::<f32>(), i)).collect();
    let k = k.min(scored.len());
    scored.select_nth_unstable_by(k.saturating_sub(1), |a, b| b.0.total_cmp(&a.0));
    let mut top: Vec<(f32, usize)> = scored[..k].to_vec();
    top.sort_by(|a, b| b.0.total_cmp(&a.0));
    top.into_iter().map(|(_, i)| i).collect()
}

/// Writes `data` as one-chunk documents `v<i>` of collection `bench`, in groups of 500, as the workers write them;
/// with `maintainer`, a maintenance step runs whenever one is due, as on the lease holder.
async fn load(store: &Store, data: &[Vec<f32>], mut maintainer: Option<&mut Maintainer>) -> anyhow::Result<()> {
    let model = "bench-model".to_owned();
    for (group_number, group) in data.chunks(500).enumerate() {
        let commits: Vec<DocumentCommit> = group
            .iter()
            .enumerate()
            .map(|(j, vector)| {
                let i = group_number * 500 + j;
                let text = format!("v{i}");
                let job = Job::upsert("bench", &text, &text);
                let sha = quern_core::digest::content_sha256(&text);
                let change = DocumentChange::Replace {
                    document: DocumentState {
                        content_sha256: sha.clone(),
                        embedding_model: model.clone(),
                        chunking: "chars:1000:200".into(),
                        metadata: None,
                    },
                    chunks: vec![ChunkRow {
                        content: text,
                        content_sha256: sha,
                        embedding: Vector::from(vector.clone()),
                    }],
                };
                DocumentCommit::new(&job, JobVersion { at: Utc::now(), job_id: job.job_id }, change)
            })
            .collect();
        store.commit_documents(&commits).await?;
        if let Some(maintainer) = maintainer.as_deref_mut() {
            // One step per group keeps maintenance beside the load, as a worker's background task runs it.
            maintainer.step().await?;
        }
        if group_number % 200 == 199 {
            eprintln!("  loaded {} rows", (group_number + 1) * 500);
        }
    }
    if let Some(maintainer) = maintainer {
        maintainer.run_until_idle().await?;
    }
    Ok(())
}

struct Measured {
    /// (ef_search, recall@10, p50 ms, p95 ms).
    by_ef: Vec<(u32, f64, f64, f64)>,
    segments: usize,
    maintenance_seconds: f64,
    load_seconds: f64,
    /// Bytes of the segments' tables (TOAST and B-tree indexes included) and of their HNSW indexes.
    table_bytes: u64,
    hnsw_bytes: u64,
}

/// The 10 nearest through `Store::search` (`ef_search` 0) or with a fixed `ef_search`.
async fn search(store: &Store, query: &[f32], ef_search: u32) -> anyhow::Result<Vec<quern_store::SearchHit>> {
    let query = Vector::from(query.to_vec());
    Ok(match ef_search {
        0 => store.search("bench", query, 10).await?,
        ef => store.search_with_ef("bench", query, 10, ef).await?,
    })
}

/// Passes over the queries whose latencies are measured (after the warm-up pass).
const TIMED_PASSES: usize = 3;

async fn measure(
    store: &Store,
    queries: &[Vec<f32>],
    exact: &[Vec<usize>],
    ef_search: u32,
) -> anyhow::Result<(f64, f64, f64)> {
    // Warm-up: the first pass reads the indexes into the buffer cache.
    for query in queries {
        search(store, query, ef_search).await?;
    }
    // Three timed passes: a p95 of 600 searches moves less with what else the machine runs than one of 200.
    let mut latencies = Vec::with_capacity(queries.len() * TIMED_PASSES);
    let mut found = 0usize;
    for pass in 0..TIMED_PASSES {
        for (query, truth) in queries.iter().zip(exact) {
            let started = Instant::now();
            let hits = search(store, query, ef_search).await?;
            latencies.push(started.elapsed());
            if pass == 0 {
                found += hits
                    .iter()
                    .filter(|hit| hit.document_id[1..].parse::<usize>().is_ok_and(|i| truth.contains(&i)))
                    .count();
            }
        }
    }
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1000.0;
    Ok((found as f64 / (queries.len() * 10) as f64, at(0.50), at(0.95)))
}

async fn run_layout(
    label: &str,
    data: &[Vec<f32>],
    queries: &[Vec<f32>],
    exact: &[Vec<usize>],
    policy: Option<SegmentPolicy>,
    loaded: Option<&str>,
    args: &Args,
) -> anyhow::Result<Measured> {
    if let Some(url) = loaded {
        eprintln!("quern-search-bench: {label}: measuring the rows an earlier run loaded into {url}");
        let store = Store::connect(&StoreConfig::new(url.to_owned()))?;
        store.migrate_with_storage(args.dim, args.vector_storage).await?;
        return measure_layout(label, &store, queries, exact, args, 0.0, 0.0).await;
    }
    eprintln!("quern-search-bench: loading {} rows, {label}", data.len());
    let db = TestDatabase::create_with_storage(args.dim, args.vector_storage).await;
    let store = db.store();
    let started = Instant::now();
    let maintenance_seconds;
    match policy {
        Some(policy) => {
            let mut maintainer = Maintainer::new(store.clone(), policy);
            load(&store, data, Some(&mut maintainer)).await?;
            maintenance_seconds = 0.0;
            maintainer.release().await;
        }
        None => {
            // Everything in the hot segment, then one seal and one build: a single table with one HNSW index.
            load(&store, data, None).await?;
            let built = Instant::now();
            let mut maintainer = Maintainer::new(
                store.clone(),
                SegmentPolicy {
                    seal_rows: u64::MAX,
                    maintenance_work_mem: args.maintenance_work_mem.clone(),
                    ..SegmentPolicy::default()
                },
            );
            maintainer.seal_now().await?;
            maintainer.run_until_idle().await?;
            maintainer.release().await;
            maintenance_seconds = built.elapsed().as_secs_f64();
        }
    }
    let load_seconds = started.elapsed().as_secs_f64();
    // A checkpoint now, so that the one the load left due does not run during the timed searches.
    // (Two statements: VACUUM refuses to run in the implicit transaction of a multi-statement string.)
    let client = db.client().await;
    client.batch_execute("VACUUM ANALYZE quern_chunks").await?;
    client.batch_execute("CHECKPOINT").await?;
    let measured = measure_layout(label, &store, queries, exact, args, maintenance_seconds, load_seconds).await?;
    if args.keep_databases {
        eprintln!("  {label}: database kept: {}", db.url);
    } else {
        db.drop_database().await;
    }
    Ok(measured)
}

/// The segments' sizes, then recall and latency at every `--ef-search`.
async fn measure_layout(
    label: &str,
    store: &Store,
    queries: &[Vec<f32>],
    exact: &[Vec<usize>],
    args: &Args,
    maintenance_seconds: f64,
    load_seconds: f64,
) -> anyhow::Result<Measured> {
    let status = store.segments_status().await?;
    let segments = status.segments.iter().filter(|s| s.rows > 0).count();
    let hnsw_bytes: u64 = status.segments.iter().filter_map(|s| s.index.as_ref()).map(|i| i.size_bytes).sum();
    let table_bytes = status.segments.iter().map(|s| s.size_bytes).sum::<u64>() - hnsw_bytes;
    eprintln!(
        "  {label}: {} segments with rows ({})",
        segments,
        status
            .segments
            .iter()
            .map(|s| format!("{}:{}:{}", s.id, s.state.as_str(), s.rows))
            .collect::<Vec<_>>()
            .join(" ")
    );
    anyhow::ensure!(
        status.segments.iter().all(|s| s.state != SegmentState::Sealed),
        "a sealed segment was left without its index"
    );
    let widths = store.search_widths(10).await?;
    eprintln!(
        "  {label}: the default ef_search for k = 10, by indexed segment: {}",
        widths.iter().map(|w| format!("{}:{}", w.segment, w.ef_search)).collect::<Vec<_>>().join(" ")
    );
    let mut by_ef = Vec::new();
    for &ef in &args.ef_search {
        let (recall, p50, p95) = measure(store, queries, exact, ef).await?;
        // As it goes: a layout of 1,000,000 rows takes an hour before the table at the end.
        eprintln!("  {label}: ef_search {ef}: recall@10 {recall:.3}, p50 {p50:.2} ms, p95 {p95:.2} ms");
        by_ef.push((ef, recall, p50, p95));
    }
    Ok(Measured { by_ef, segments, maintenance_seconds, load_seconds, table_bytes, hnsw_bytes })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut vectors = Vectors::new(args.dim, args.clusters, 42);
    let data: Vec<Vec<f32>> = (0..args.rows).map(|_| vectors.sample()).collect();
    let queries: Vec<Vec<f32>> = (0..args.queries).map(|_| vectors.sample()).collect();
    let computing = Instant::now();
    let exact: Vec<Vec<usize>> = queries.iter().map(|q| exact_top(&data, q, 10)).collect();
    eprintln!(
        "quern-search-bench: exact top 10 of {} queries in {:.1} s",
        queries.len(),
        computing.elapsed().as_secs_f64()
    );

    let policy = SegmentPolicy {
        seal_rows: args.segment_rows,
        merge_factor: args.merge_factor,
        maintenance_work_mem: args.maintenance_work_mem.clone(),
        ..SegmentPolicy::default()
    };
    let segmented = if args.no_segments {
        None
    } else {
        Some(
            run_layout("segments", &data, &queries, &exact, Some(policy), args.segments_database.as_deref(), &args)
                .await
                .context("segments")?,
        )
    };
    let baseline = if args.no_baseline {
        None
    } else {
        Some(
            run_layout("one index", &data, &queries, &exact, None, args.baseline_database.as_deref(), &args)
                .await
                .context("baseline")?,
        )
    };
    let report = |m: &Measured| {
        json!({
            "by_ef_search": m.by_ef.iter().map(|(ef, recall, p50, p95)| json!({
                "ef_search": ef, "recall_at_10": recall, "p50_ms": p50, "p95_ms": p95,
            })).collect::<Vec<_>>(),
            "segments_with_rows": m.segments, "load_seconds": m.load_seconds,
            "final_build_seconds": m.maintenance_seconds,
            "table_mb": m.table_bytes as f64 / 1e6, "hnsw_mb": m.hnsw_bytes as f64 / 1e6,
        })
    };
    println!(
        "\nrows {}, dim {}, {} queries, segment rows {}, merge factor {}, stored as {}",
        args.rows, args.dim, args.queries, args.segment_rows, args.merge_factor, args.vector_storage
    );
    println!(
        "{:<12} {:>9} {:>10} {:>9} {:>9} {:>9}",
        "layout", "ef_search", "recall@10", "p50 ms", "p95 ms", "segments"
    );
    for (name, m) in [("segments", segmented.as_ref()), ("one index", baseline.as_ref())] {
        for (ef, recall, p50, p95) in m.map(|m| m.by_ef.clone()).unwrap_or_default() {
            let segments = m.map_or(0, |m| m.segments);
            let ef = if ef == 0 { "default".to_owned() } else { ef.to_string() };
            println!("{name:<12} {ef:>9} {recall:>10.3} {p50:>9.2} {p95:>9.2} {segments:>9}");
        }
    }
    for (name, m) in [("segments", segmented.as_ref()), ("one index", baseline.as_ref())] {
        if let Some(m) = m {
            println!(
                "{name}: table {:.1} MB, HNSW indexes {:.1} MB, load {:.1} s, final build {:.1} s",
                m.table_bytes as f64 / 1e6,
                m.hnsw_bytes as f64 / 1e6,
                m.load_seconds,
                m.maintenance_seconds
            );
        }
    }
    let summary = json!({
        "rows": args.rows, "dim": args.dim, "queries": args.queries, "segment_rows": args.segment_rows,
        "merge_factor": args.merge_factor,
        "vector_storage": args.vector_storage.type_name(), "segments": segmented.as_ref().map(report), "one_index": baseline.as_ref().map(report),
    });
    println!("{summary}");
    Ok(())
}
