"""Jobs published by this package are processed by the real quern-worker: chunks written to Postgres, every job
``succeeded`` in quern_jobs, the caller's trace in the worker's log lines. The worker and the producer declare the
topology in either order without PRECONDITION_FAILED.

The module has its own database and fake embedder; each test its own queue prefix and worker process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from support import (  # noqa: F401 - database and embedder are fixtures
    AMQP_URL,
    Broker,
    FakeEmbedder,
    ScratchDatabase,
    Worker,
    database,
    embedder,
    unique_name,
    wait_until,
)

from quern_producer import AsyncProducer, Job, Producer

pytestmark = pytest.mark.worker


@pytest.fixture
def start_worker(database: ScratchDatabase, embedder: FakeEmbedder, tmp_path: Path) -> Iterator[Any]:
    workers: list[Worker] = []

    def start(prefix: str) -> Worker:
        worker = Worker(prefix, database.url, embedder.url, tmp_path / f"worker-{len(workers)}.log")
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


def document(i: int) -> str:
    # Several chunks at the worker's default chunk size (1000 characters).
    return " ".join(f"paragraph {i}.{n}: the quick brown fox jumps over the lazy dog" for n in range(60))


def wait_for_success(database: ScratchDatabase, job_ids: Sequence[str], worker: Worker, timeout: float = 90) -> None:
    def done() -> bool:
        assert worker.process.poll() is None, f"the worker exited: {worker.log_path.read_text()[-3000:]}"
        statuses = database.job_statuses(job_ids)
        return len(statuses) == len(set(job_ids)) and set(statuses.values()) == {"succeeded"}

    assert wait_until(done, timeout, 0.25), f"jobs not all succeeded: {database.job_statuses(job_ids)}"


def test_worker_first_then_producer(start_worker: Any, database: ScratchDatabase, broker: Broker, prefix: str) -> None:
    worker = start_worker(prefix)
    # The worker declares the topology first; the producer's declaration must then match it exactly.
    assert wait_until(lambda: broker.queue_exists(f"{prefix}.retry.200ms"), 60), "the worker declared its queues"
    collection = unique_name("e2e")
    with Producer(AMQP_URL, queue_prefix=prefix) as producer:
        ids = producer.enqueue_many(
            [Job.upsert(collection, f"doc-{i}.md", document(i), metadata={"n": i}) for i in range(20)]
        )
        gone = producer.enqueue(collection, "gone.md", document(99))
        wait_for_success(database, [*ids, gone], worker)
        deleted = producer.delete(collection, "gone.md")
        wait_for_success(database, [deleted], worker)

    rows = database.query(
        "SELECT document_id, chunk_count, metadata FROM quern_documents WHERE collection = %s ORDER BY document_id",
        (collection,),
    )
    assert [row[0] for row in rows] == sorted(f"doc-{i}.md" for i in range(20))
    assert all(chunks > 1 for _, chunks, _ in rows)
    assert {row[0]: row[2] for row in rows}["doc-7.md"] == {"n": 7}
    [(chunks,)] = database.query(
        "SELECT count(*) FROM quern_chunks WHERE collection = %s AND vector_dims(embedding) = 64", (collection,)
    )
    assert chunks == sum(row[1] for row in rows)
    assert broker.ready_count(f"{prefix}.ingest") == 0
    assert broker.ready_count(f"{prefix}.dead") == 0


def test_producer_first_then_worker_and_the_trace_reaches_the_worker(
    start_worker: Any, database: ScratchDatabase, broker: Broker, prefix: str
) -> None:
    from opentelemetry import trace

    collection = unique_name("e2e")
    trace_id = 0x5B8AA5A2D2C872E8321CF37308D69DF2
    context = trace.SpanContext(
        trace_id=trace_id,
        span_id=0x051581BF3CB55C13,
        is_remote=False,
        trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
    )
    # The producers declare the topology first; the worker's declaration must then match it exactly.
    with Producer(AMQP_URL, queue_prefix=prefix) as producer:
        with trace.use_span(trace.NonRecordingSpan(context)):
            traced = producer.enqueue(collection, "traced.md", document(1))
        ids = [traced, *producer.enqueue_many([Job.upsert(collection, f"b{i}", document(i)) for i in range(30)])]

    async def enqueue_async() -> list[str]:
        async with AsyncProducer(AMQP_URL, queue_prefix=prefix) as producer:
            return [
                await producer.enqueue(collection, "async.md", document(2)),
                *await producer.enqueue_many([{"collection": collection, "document_id": "a2", "text": "short"}]),
            ]

    ids += asyncio.run(enqueue_async())
    assert broker.ready_count(f"{prefix}.ingest") == len(ids)

    worker = start_worker(prefix)
    wait_for_success(database, ids, worker)
    [(documents,)] = database.query("SELECT count(*) FROM quern_documents WHERE collection = %s", (collection,))
    assert documents == 33

    # Every log line of a job carries its job id and trace id: the traced job's is the caller's trace.
    def line_of(job_id: str) -> dict[str, Any]:
        for line in worker.log_lines():
            span = line.get("span") or {}
            if span.get("job_id") == job_id:
                return span
        raise AssertionError(f"no log line for job {job_id}")

    assert line_of(traced)["trace_id"] == f"{trace_id:032x}"
    assert line_of(ids[1])["trace_id"] != f"{trace_id:032x}"
