"""AsyncProducer against the real RabbitMQ: the same messages and checks as Producer, on the running event loop;
concurrent tasks sharing one producer; failures raised and recovered from the same way."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable
from typing import Any, TypeVar

import pytest
from support import AMQP_URL, Broker, TcpProxy, free_port, load_examples, unique_name, url_with_host, wait_until

from quern_producer import AsyncProducer, BrokerError, InvalidJob, Job, QuernError

T = TypeVar("T")


def run(coroutine: Awaitable[T]) -> T:
    """Runs a coroutine on a fresh event loop (no pytest plugin needed)."""
    return asyncio.run(coroutine)  # type: ignore[arg-type]


def ingest(prefix: str) -> str:
    return f"{prefix}.ingest"


def test_a_published_job_is_what_the_contract_describes(broker: Broker, prefix: str) -> None:
    async def main() -> list[str]:
        async with AsyncProducer(AMQP_URL, queue_prefix=prefix) as producer:
            upsert = await producer.enqueue("articles", "a.md", "text", metadata={"lang": "en"})
            deleted = await producer.delete("articles", "b.md")
            batch = await producer.enqueue_many([Job.upsert("articles", f"{i}.md", "x") for i in range(50)])
            return [upsert, deleted, *batch]

    ids = run(main())
    messages = broker.take_all(ingest(prefix))
    assert [properties.message_id for properties, _ in messages] == ids
    properties, body = messages[0]
    assert json.loads(body) == {
        "job_id": ids[0],
        "collection": "articles",
        "document_id": "a.md",
        "text": "text",
        "metadata": {"lang": "en"},
        "op": "upsert",
    }
    assert (properties.content_type, properties.delivery_mode, properties.app_id) == (
        "application/json",
        2,
        "quern-producer",
    )
    assert properties.headers["quern-contract"] == 1 and properties.headers["traceparent"].startswith("00-")
    assert json.loads(messages[1][1])["op"] == "delete"
    assert all(uuid.UUID(job_id).version == 7 for job_id in ids)


@pytest.mark.parametrize("name,body", [(n, b) for n, b in load_examples("rejected") if n != "missing job_id"])
def test_every_rejected_example_raises_before_anything_is_published(
    broker: Broker, prefix: str, name: str, body: Any
) -> None:
    async def main() -> None:
        async with AsyncProducer(AMQP_URL, queue_prefix=prefix) as producer:
            with pytest.raises(ValueError) as raised:
                await producer.enqueue_many([Job.upsert("c", "good", "x"), body])
            assert isinstance(raised.value, InvalidJob) and raised.value.index == 1

    run(main())
    assert broker.ready_count(ingest(prefix)) == 0


def test_a_bad_argument_raises_without_even_connecting() -> None:
    async def main() -> None:
        # The port is closed: a connection attempt would raise BrokerError, so ValueError proves none was made.
        producer = AsyncProducer(url_with_host(AMQP_URL, "127.0.0.1", free_port()))
        with pytest.raises(ValueError, match="`collection`"):
            await producer.enqueue("", "d", "x")
        with pytest.raises(ValueError, match="`metadata`"):
            await producer.enqueue("c", "d", "x", metadata=["not", "an", "object"])  # type: ignore[arg-type]

    run(main())


def test_a_broker_that_is_down_raises_on_connect_and_on_the_first_call() -> None:
    async def main() -> None:
        url = url_with_host(AMQP_URL, "127.0.0.1", free_port())
        producer = AsyncProducer(url, queue_prefix=unique_name("qt_py"))
        with pytest.raises(BrokerError, match="connection refused"):
            await producer.connect()
        with pytest.raises(BrokerError, match="connection refused") as raised:
            await producer.enqueue("c", "d", "x")
        assert len(raised.value.job_ids) == 1

    started = time.monotonic()
    run(main())
    assert time.monotonic() - started < 10


def test_a_lost_connection_fails_the_call_and_the_next_call_reconnects(broker: Broker, prefix: str) -> None:
    proxy = TcpProxy()

    async def main() -> list[str]:
        async with AsyncProducer(proxy.url, queue_prefix=prefix) as producer:
            first = await producer.enqueue("c", "d1", "x")
            proxy.cut()
            await asyncio.sleep(0.2)
            with pytest.raises(BrokerError):
                await producer.enqueue("c", "d2", "x")
            proxy.restore()
            second = await producer.enqueue("c", "d3", "x")
            proxy.cut(keep_listening=True)
            # The event loop notices the closed connection by itself; the next call then reconnects first.
            for _ in range(100):
                if producer._session is None or not producer._session.usable:
                    break
                await asyncio.sleep(0.05)
            third = await producer.enqueue("c", "d4", "x")
            return [first, second, third]

    try:
        ids = run(main())
    finally:
        proxy.close()
    assert [properties.message_id for properties, _ in broker.take_all(ingest(prefix))] == ids


def test_a_missing_confirm_raises_after_the_timeout(broker: Broker, prefix: str) -> None:
    proxy = TcpProxy()

    async def main() -> None:
        async with AsyncProducer(proxy.url, queue_prefix=prefix, confirm_timeout=1.0) as producer:
            await producer.enqueue("c", "d1", "x")
            proxy.stall()
            started = time.monotonic()
            with pytest.raises(BrokerError, match="no confirm from RabbitMQ within 1 s"):
                await producer.enqueue("c", "d2", "x")
            assert time.monotonic() - started < 10
            proxy.restore()
            await producer.enqueue("c", "d3", "x")

    try:
        run(main())
    finally:
        proxy.close()
    assert broker.ready_count(ingest(prefix)) == 3


def test_an_unroutable_job_raises(broker: Broker, prefix: str) -> None:
    async def main() -> None:
        async with AsyncProducer(AMQP_URL, queue_prefix=prefix) as producer:
            broker.run(lambda channel: channel.queue_delete(ingest(prefix)))
            with pytest.raises(BrokerError, match="unroutable"):
                await producer.enqueue("c", "d", "x")

    run(main())


def test_concurrent_tasks_share_one_producer(broker: Broker, prefix: str) -> None:
    async def main() -> list[str]:
        async with AsyncProducer(AMQP_URL, queue_prefix=prefix) as producer:
            singles = [producer.enqueue("c", f"d{i}", "x") for i in range(100)]
            batches = [producer.enqueue_many([Job.upsert("c", f"b{i}-{j}", "x") for j in range(10)]) for i in range(5)]
            results = await asyncio.gather(*singles, *batches)
            return [r for result in results for r in ([result] if isinstance(result, str) else result)]

    ids = run(main())
    assert len(ids) == 150 == len(set(ids))
    assert sorted(p.message_id for p, _ in broker.take_all(ingest(prefix))) == sorted(ids)


def test_one_producer_survives_a_new_event_loop(broker: Broker, prefix: str) -> None:
    producer = AsyncProducer(AMQP_URL, queue_prefix=prefix)
    run(producer.enqueue("c", "first-loop", "x"))
    # asyncio.run closed the first loop: the next call reconnects on the new loop.
    run(producer.enqueue("c", "second-loop", "x"))
    run(producer.close())
    with pytest.raises(QuernError, match="closed"):
        run(producer.enqueue("c", "after-close", "x"))
    assert broker.ready_count(ingest(prefix)) == 2


def test_the_callers_trace_is_carried(broker: Broker, prefix: str) -> None:
    from opentelemetry import trace

    context = trace.SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=False,
        trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
    )

    async def main() -> None:
        async with AsyncProducer(AMQP_URL, queue_prefix=prefix) as producer:
            with trace.use_span(trace.NonRecordingSpan(context)):
                await producer.enqueue("c", "d", "x")

    run(main())
    [(properties, _)] = broker.take_all(ingest(prefix))
    assert properties.headers["traceparent"] == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_a_cancelled_connect_leaves_no_connection_behind(prefix: str) -> None:
    proxy = TcpProxy()
    proxy.stall()

    async def main() -> None:
        producer = AsyncProducer(proxy.url, queue_prefix=prefix)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(producer.connect(), 0.5)
        await asyncio.sleep(0.2)

    try:
        run(main())
        assert wait_until(lambda: proxy.open_connections() == 0, 5)
    finally:
        proxy.close()
