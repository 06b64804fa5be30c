"""Throughput of quern_producer with publisher confirms: jobs/s enqueued one at a time (one confirm round trip
each) and in batches (``enqueue_many``, one round trip per batch), for Producer and AsyncProducer.

    python bench.py [--amqp-url URL] [--single-jobs 2000] [--batched-jobs 20000] [--batch-size 100]

It publishes to a throwaway queue prefix (``qbench_py_<random>``), whose queues and exchanges it deletes at the
end; no worker consumes them, so the figures are the producer's and the broker's alone (messages are persistent
and land in a quorum queue, as in production).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import time
import uuid
from typing import Callable

import pika

from quern_producer import AsyncProducer, Job, Producer
from quern_producer._session import redact_url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--amqp-url", default=os.environ.get("QUERN_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"))
    parser.add_argument("--single-jobs", type=int, default=2000, help="jobs enqueued one at a time")
    parser.add_argument("--batched-jobs", type=int, default=20000, help="jobs enqueued with enqueue_many")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--text-chars", type=int, default=1000, help="characters of text per job")
    parser.add_argument("--prefix", default=f"qbench_py_{uuid.uuid4().hex[:12]}", help="throwaway queue prefix")
    arguments = parser.parse_args()
    text = ("lorem ipsum dolor sit amet " * (arguments.text_chars // 27 + 1))[: arguments.text_chars]

    print(
        f"quern-producer bench: Python {platform.python_version()}, pika {pika.__version__}, "
        f"{redact_url(arguments.amqp_url)}, prefix {arguments.prefix}, {arguments.text_chars}-character texts"
    )
    try:
        with Producer(arguments.amqp_url, queue_prefix=arguments.prefix) as producer:
            producer.enqueue_many([Job.upsert("bench", f"warm-{i}", text) for i in range(arguments.batch_size)])
            report(
                "Producer",
                "single",
                arguments.single_jobs,
                lambda: blocking_single(producer, arguments.single_jobs, text),
            )
            report(
                "Producer",
                f"batched ({arguments.batch_size})",
                arguments.batched_jobs,
                lambda: blocking_batched(producer, arguments.batched_jobs, arguments.batch_size, text),
            )
        asynchronous = asyncio.run(async_bench(arguments, text))
        for line in asynchronous:
            print(line)
    finally:
        delete_topology(arguments.amqp_url, arguments.prefix)


def report(producer: str, mode: str, jobs: int, run: Callable[[], None]) -> None:
    started = time.perf_counter()
    run()
    print(line(producer, mode, jobs, time.perf_counter() - started))


def line(producer: str, mode: str, jobs: int, seconds: float) -> str:
    return f"{producer:<14} {mode:<15} {jobs:>7} jobs in {seconds:6.2f} s: {jobs / seconds:8.0f} jobs/s"


def blocking_single(producer: Producer, jobs: int, text: str) -> None:
    for i in range(jobs):
        producer.enqueue("bench", f"single-{i}", text)


def blocking_batched(producer: Producer, jobs: int, batch_size: int, text: str) -> None:
    for start in range(0, jobs, batch_size):
        producer.enqueue_many(
            [Job.upsert("bench", f"batched-{i}", text) for i in range(start, min(start + batch_size, jobs))]
        )


async def async_bench(arguments: argparse.Namespace, text: str) -> list[str]:
    lines = []
    async with AsyncProducer(arguments.amqp_url, queue_prefix=arguments.prefix) as producer:
        started = time.perf_counter()
        for i in range(arguments.single_jobs):
            await producer.enqueue("bench", f"async-single-{i}", text)
        lines.append(line("AsyncProducer", "single", arguments.single_jobs, time.perf_counter() - started))
        started = time.perf_counter()
        for start in range(0, arguments.batched_jobs, arguments.batch_size):
            end = min(start + arguments.batch_size, arguments.batched_jobs)
            await producer.enqueue_many([Job.upsert("bench", f"async-batched-{i}", text) for i in range(start, end)])
        lines.append(
            line(
                "AsyncProducer",
                f"batched ({arguments.batch_size})",
                arguments.batched_jobs,
                time.perf_counter() - started,
            )
        )
    return lines


def delete_topology(amqp_url: str, prefix: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    for queue in (f"{prefix}.ingest", f"{prefix}.dead"):
        channel.queue_delete(queue)
    for exchange in (prefix, f"{prefix}.dead"):
        channel.exchange_delete(exchange)
    connection.close()


if __name__ == "__main__":
    main()
