"""The blocking Producer against the real RabbitMQ: what it publishes, what it refuses before publishing, and
how it fails (never silently) and recovers: broker down, connection lost or closed by the broker, a missing
confirm, a nack, a return, a topology that does not match."""

from __future__ import annotations

import json
import multiprocessing
import threading
import time
import uuid
from typing import Any, Callable

import pytest
from support import (
    AMQP_URL,
    Broker,
    TcpProxy,
    close_broker_connection,
    free_port,
    load_examples,
    unique_name,
    url_with_host,
)

from quern_producer import BrokerError, InvalidJob, Job, Producer, QuernError
from quern_producer.topology import Topology, ingest_queue_arguments

MakeProducer = Callable[..., Producer]


def ingest(prefix: str) -> str:
    return f"{prefix}.ingest"


def test_a_published_job_is_what_the_contract_describes(
    make_producer: MakeProducer, broker: Broker, prefix: str
) -> None:
    producer = make_producer()
    before = int(time.time())
    job_id = producer.enqueue("articles", "2024/launch.md", "Ünïcode text", metadata={"lang": "en", "n": [1, 2]})
    [(properties, body)] = broker.take_all(ingest(prefix))
    assert uuid.UUID(job_id).version == 7
    assert json.loads(body) == {
        "job_id": job_id,
        "collection": "articles",
        "document_id": "2024/launch.md",
        "text": "Ünïcode text",
        "metadata": {"lang": "en", "n": [1, 2]},
        "op": "upsert",
    }
    assert properties.content_type == "application/json"
    assert properties.delivery_mode == 2
    assert properties.message_id == job_id
    assert properties.app_id == "quern-producer"
    assert before <= properties.timestamp <= int(time.time()) + 1
    assert properties.headers["quern-contract"] == 1
    version, trace_id, span_id, flags = properties.headers["traceparent"].split("-")
    assert (version, len(trace_id), len(span_id), flags) == ("00", 32, 16, "01")
    assert int(trace_id, 16) and int(span_id, 16)


def test_deletes_and_batches_keep_their_order_and_ids(make_producer: MakeProducer, broker: Broker, prefix: str) -> None:
    producer = make_producer()
    deleted = producer.delete("articles", "old.md")
    given = Job.upsert("articles", "a.md", "a")
    jobs: list[Job | dict[str, Any]] = [
        given,
        {"collection": "articles", "document_id": "b.md", "text": "b", "job_id": str(uuid.uuid4())},
    ]
    jobs += [{"collection": "articles", "document_id": f"{i}.md", "text": str(i)} for i in range(98)]
    ids = producer.enqueue_many(jobs)
    assert producer.enqueue_many([]) == []
    assert ids[0] == given.job_id and len(ids) == 100 == len(set(ids))
    messages = broker.take_all(ingest(prefix))
    assert [properties.message_id for properties, _ in messages] == [deleted, *ids]
    assert json.loads(messages[0][1]) == {
        "job_id": deleted,
        "collection": "articles",
        "document_id": "old.md",
        "text": "",
        "op": "delete",
    }
    # Ids made by one process increase, so the worker orders a document's jobs as they were made.
    made_here = [deleted, given.job_id] + ids[2:]
    assert [uuid.UUID(i).int for i in made_here] == sorted(uuid.UUID(i).int for i in made_here)


ACCEPTED = load_examples("accepted")
REJECTED = load_examples("rejected")


def test_every_accepted_example_is_enqueued(make_producer: MakeProducer, broker: Broker, prefix: str) -> None:
    producer = make_producer()
    # enqueue_many refuses keys that are not job fields (a typo would lose data silently); the worker ignores
    # unknown fields, so leaving them out changes nothing it reads.
    bodies = [
        {k: v for k, v in body.items() if k in ("job_id", "collection", "document_id", "text", "metadata", "op")}
        for _, body in ACCEPTED
    ]
    assert producer.enqueue_many(bodies) == [body["job_id"] for body in bodies]
    assert broker.ready_count(ingest(prefix)) == len(bodies)


@pytest.mark.parametrize("name,body", [(n, b) for n, b in REJECTED if n != "missing job_id"])
def test_every_rejected_example_raises_before_anything_is_published(
    make_producer: MakeProducer, broker: Broker, prefix: str, name: str, body: Any
) -> None:
    producer = make_producer()
    good = Job.upsert("c", "good", "published only if the bad job were accepted")
    with pytest.raises(ValueError) as raised:
        producer.enqueue_many([good, body])
    assert isinstance(raised.value, InvalidJob) and raised.value.index == 1
    assert broker.ready_count(ingest(prefix)) == 0, "nothing of the batch is published"


def _enqueue_arguments(body: Any) -> Any:
    """The enqueue() call a caller would make for this body, when every field of it is an argument of enqueue."""
    if not isinstance(body, dict) or not {"job_id", "collection", "document_id", "text"} <= body.keys():
        return None
    if not body.keys() <= {"job_id", "collection", "document_id", "text", "metadata"}:
        return None
    return body


CALLER_FAULTS = [(n, b) for n, b in REJECTED if _enqueue_arguments(b) is not None]


def test_the_callers_faults_are_most_rejected_examples() -> None:
    assert len(CALLER_FAULTS) >= 12, [name for name, _ in CALLER_FAULTS]


@pytest.mark.parametrize("name,body", CALLER_FAULTS)
def test_enqueue_raises_on_a_bad_argument_before_publishing(
    make_producer: MakeProducer, broker: Broker, prefix: str, name: str, body: dict[str, Any]
) -> None:
    producer = make_producer()
    with pytest.raises(ValueError):
        producer.enqueue(
            body["collection"], body["document_id"], body["text"], metadata=body.get("metadata"), job_id=body["job_id"]
        )
    if "text" not in name and "metadata" not in name:
        with pytest.raises(ValueError):
            producer.delete(body["collection"], body["document_id"], job_id=body["job_id"])
    assert broker.ready_count(ingest(prefix)) == 0


def test_a_broker_that_is_down_raises_at_construction() -> None:
    started = time.monotonic()
    with pytest.raises(BrokerError, match="cannot connect to RabbitMQ at 127.0.0.1:.*connection refused"):
        Producer(url_with_host(AMQP_URL, "127.0.0.1", free_port()), queue_prefix=unique_name("qt_py"))
    assert time.monotonic() - started < 10


def test_a_refused_login_says_so_without_the_password() -> None:
    with pytest.raises(BrokerError) as raised:
        Producer("amqp://guest:n0t-the-passw0rd@" + AMQP_URL.split("@", 1)[1], queue_prefix=unique_name("qt_py"))
    assert "login refused" in str(raised.value)
    assert "n0t-the-passw0rd" not in str(raised.value)


def test_a_lost_connection_fails_the_call_and_the_next_call_reconnects(
    make_producer: MakeProducer, broker: Broker, prefix: str
) -> None:
    proxy = TcpProxy()
    try:
        producer = make_producer(proxy.url)
        first = producer.enqueue("c", "d1", "before the outage")
        proxy.cut()
        # The broker is unreachable: the call raises, naming its job; nothing is silently dropped.
        with pytest.raises(BrokerError) as raised:
            producer.enqueue("c", "d2", "during the outage")
        lost = raised.value.job_ids
        assert len(lost) == 1
        with pytest.raises(BrokerError):
            producer.enqueue_many([Job.upsert("c", "d3", "still down")])
        proxy.restore()
        third = producer.enqueue("c", "d4", "after the outage")
        ids = [properties.message_id for properties, _ in broker.take_all(ingest(prefix))]
        assert ids == [first, third]
    finally:
        proxy.close()


def test_a_connection_closed_while_idle_is_replaced_before_the_next_publish(
    make_producer: MakeProducer, broker: Broker, prefix: str
) -> None:
    proxy = TcpProxy()
    try:
        producer = make_producer(proxy.url)
        producer.enqueue("c", "d1", "x")
        proxy.cut(keep_listening=True)
        # The producer notices the closed connection before publishing, so reconnecting loses nothing.
        producer.enqueue("c", "d2", "x")
        assert broker.ready_count(ingest(prefix)) == 2
    finally:
        proxy.close()


def test_a_connection_closed_by_the_broker_is_replaced(
    make_producer: MakeProducer, broker: Broker, prefix: str
) -> None:
    name = unique_name("quern-producer-test")
    producer = make_producer(connection_name=name)
    producer.enqueue("c", "d1", "x")
    if not close_broker_connection(name):
        pytest.skip("rabbitmqctl cannot close connections here")
    # Let the broker's Connection.Close arrive: the producer reads it before its next publish.
    time.sleep(1)
    producer.enqueue("c", "d2", "x")
    assert broker.ready_count(ingest(prefix)) == 2


def test_an_idle_connection_past_its_heartbeat_is_replaced(
    make_producer: MakeProducer, broker: Broker, prefix: str
) -> None:
    # Nobody answers heartbeats while the producer is idle, so the broker closes the connection after about two
    # heartbeat intervals; the next call finds it closed and reconnects before publishing.
    producer = make_producer(AMQP_URL + ("&" if "?" in AMQP_URL else "?") + "heartbeat=1")
    producer.enqueue("c", "d1", "x")
    time.sleep(3.5)
    producer.enqueue("c", "d2", "x")
    assert broker.ready_count(ingest(prefix)) == 2


def test_a_missing_confirm_raises_after_the_timeout(make_producer: MakeProducer, broker: Broker, prefix: str) -> None:
    proxy = TcpProxy()
    try:
        producer = make_producer(proxy.url, confirm_timeout=1.0)
        producer.enqueue("c", "d1", "x")
        proxy.stall()
        started = time.monotonic()
        with pytest.raises(BrokerError, match="no confirm from RabbitMQ within 1 s") as raised:
            producer.enqueue_many([Job.upsert("c", f"s{i}", "x") for i in range(3)])
        assert len(raised.value.job_ids) == 3
        # The timeout, then at most CLOSE_TIMEOUT (2 s) trying to close the stalled connection politely.
        assert time.monotonic() - started < 10
        proxy.restore()
        producer.enqueue("c", "d2", "x")
        # The stalled jobs did reach the broker; the error said they may have been enqueued.
        assert broker.ready_count(ingest(prefix)) == 5
    finally:
        proxy.close()


def test_a_nack_raises(make_producer: MakeProducer, broker: Broker, prefix: str) -> None:
    producer = make_producer()
    # A second queue on the ingest route that refuses every message: the broker nacks the publish.
    broker.run(
        lambda channel: (
            channel.queue_declare(f"{prefix}.full", arguments={"x-max-length": 0, "x-overflow": "reject-publish"}),
            channel.queue_bind(f"{prefix}.full", prefix, routing_key="ingest"),
        )
    )
    with pytest.raises(BrokerError, match="refused by the broker \\(nack") as raised:
        producer.enqueue("c", "d", "x")
    assert len(raised.value.job_ids) == 1
    broker.run(lambda channel: channel.queue_delete(f"{prefix}.full"))
    producer.enqueue("c", "d", "x")


def test_an_unroutable_job_raises(make_producer: MakeProducer, broker: Broker, prefix: str) -> None:
    producer = make_producer()
    broker.run(lambda channel: channel.queue_delete(ingest(prefix)))
    with pytest.raises(BrokerError, match="unroutable \\(312 NO_ROUTE") as raised:
        producer.enqueue_many([Job.upsert("c", "a", "x"), Job.upsert("c", "b", "x")])
    assert len(raised.value.job_ids) == 2
    # A new producer declares the topology again, and publishing works again.
    make_producer().enqueue("c", "d", "x")
    assert broker.ready_count(ingest(prefix)) == 1


def test_a_missing_exchange_fails_the_call_and_the_next_call_declares_it_again(
    make_producer: MakeProducer, broker: Broker, prefix: str
) -> None:
    producer = make_producer()
    broker.run(lambda channel: channel.exchange_delete(prefix))
    with pytest.raises(BrokerError, match="404 NOT_FOUND"):
        producer.enqueue("c", "d", "x")
    producer.enqueue("c", "d", "x")
    assert broker.ready_count(ingest(prefix)) == 1


def test_the_topology_is_declared_idempotently(make_producer: MakeProducer, broker: Broker, prefix: str) -> None:
    # Declared first by hand with the same arguments (as the worker does), then by two producers.
    topology = Topology(prefix)
    broker.run(
        lambda channel: channel.queue_declare(
            topology.ingest_queue, durable=True, arguments=ingest_queue_arguments(topology)
        )
    )
    make_producer().enqueue("c", "d", "x")
    make_producer().enqueue("c", "d", "x")
    assert broker.ready_count(ingest(prefix)) == 2


def test_a_queue_with_other_arguments_is_reported(broker: Broker, prefix: str) -> None:
    broker.run(
        lambda channel: channel.queue_declare(ingest(prefix), durable=True, arguments={"x-queue-type": "quorum"})
    )
    with pytest.raises(BrokerError, match="refused to declare the exchanges and queues.*406 PRECONDITION_FAILED"):
        Producer(AMQP_URL, queue_prefix=prefix)


def test_close_is_final_and_the_context_manager_closes(broker: Broker, prefix: str) -> None:
    with Producer(AMQP_URL, queue_prefix=prefix) as producer:
        producer.enqueue("c", "d", "x")
    with pytest.raises(QuernError, match="closed"):
        producer.enqueue("c", "d", "x")
    producer.close()
    assert "guest:***@" in repr(producer) and prefix in repr(producer)
    assert broker.ready_count(ingest(prefix)) == 1


def test_threads_can_share_one_producer(make_producer: MakeProducer, broker: Broker, prefix: str) -> None:
    producer = make_producer()
    threads, per_thread = 8, 50
    ids: list[list[str]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def run(index: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                if i % 10 == 9:
                    ids[index].extend(
                        producer.enqueue_many([Job.upsert("c", f"t{index}-{i}-b{j}", "x") for j in range(2)])
                    )
                else:
                    ids[index].append(producer.enqueue("c", f"t{index}-{i}", "x"))
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    every_id = [job_id for per in ids for job_id in per]
    expected = threads * (per_thread + per_thread // 10)
    assert len(every_id) == expected == len(set(every_id))
    published = [properties.message_id for properties, _ in broker.take_all(ingest(prefix))]
    assert sorted(published) == sorted(every_id)


def _enqueue_in_child(producer: Producer, results: Any) -> None:
    try:
        results.put(producer.enqueue("c", "from-the-child", "x"))
    except BaseException as error:  # noqa: BLE001 - reported to the parent
        results.put(repr(error))


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_a_forked_child_reconnects_and_leaves_the_parents_connection_alone(
    make_producer: MakeProducer, broker: Broker, prefix: str
) -> None:
    producer = make_producer()
    producer.enqueue("c", "before-the-fork", "x")
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=_enqueue_in_child, args=(producer, results))
    child.start()
    child_result = results.get(timeout=30)
    child.join(30)
    assert child.exitcode == 0
    assert uuid.UUID(child_result).version == 7, child_result
    producer.enqueue("c", "after-the-fork", "x")
    assert broker.ready_count(ingest(prefix)) == 3


def test_the_callers_trace_is_carried(make_producer: MakeProducer, broker: Broker, prefix: str) -> None:
    from opentelemetry import trace

    context = trace.SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=False,
        trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
    )
    producer = make_producer()
    with trace.use_span(trace.NonRecordingSpan(context)):
        producer.enqueue_many([Job.upsert("c", "a", "x"), Job.upsert("c", "b", "x")])
    producer.enqueue("c", "untraced", "x")
    headers = [properties.headers["traceparent"] for properties, _ in broker.take_all(ingest(prefix))]
    assert headers[:2] == ["00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"] * 2
    assert "0af7651916cd43dd8448eb211c80319c" not in headers[2]


def test_bad_settings_are_value_errors() -> None:
    settings: list[dict[str, Any]] = [{"queue_prefix": "bad prefix"}, {"confirm_timeout": 0}, {"confirm_timeout": "5"}]
    for options in settings:
        with pytest.raises(ValueError):
            Producer(AMQP_URL, **options)
    with pytest.raises(ValueError, match="amqp_url"):
        Producer("postgresql://postgres@127.0.0.1:5433/postgres")
