//! Micro-benchmarks of the worker's CPU work per job: decoding the body and chunking the text.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use quern_benches::sample_document;
use quern_core::{Chunker, Job};

fn chunking(c: &mut Criterion) {
    let chunker = Chunker::new(1000, 200).expect("valid");
    let mut group = c.benchmark_group("chunk");
    for size in [1_000usize, 8_000, 64_000] {
        let text = sample_document(size);
        group.throughput(Throughput::Bytes(text.len() as u64));
        group
            .bench_with_input(BenchmarkId::from_parameter(size), &text, |b, text| b.iter(|| chunker.split(text).len()));
    }
    group.finish();
}

fn decoding(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_job");
    for size in [1_000usize, 8_000, 64_000] {
        let body = Job::upsert("collection", "some/document.txt", sample_document(size)).encode();
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &body, |b, body| {
            b.iter(|| Job::decode(body).expect("valid").text.len())
        });
    }
    group.finish();
}

criterion_group!(benches, chunking, decoding);
criterion_main!(benches);
