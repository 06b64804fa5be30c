"""The contract without a broker: the shared examples through validate_job, the rules the examples do not show
(lengths in characters, lone surrogates, JSON-only metadata), job ids, bodies, queue arguments as bytes, the
traceparent and the confirm bookkeeping."""

from __future__ import annotations

import math
import os
import pickle
import re
import struct
import sys
import time
import uuid
from types import SimpleNamespace
from typing import Any

import pika.data
import pika.spec
import pytest
from support import load_examples

import quern_producer
from quern_producer import BrokerError, InvalidJob, Job, Topology, contract, new_job_id, tracing, validate_job
from quern_producer._session import Batch, Confirms, connection_parameters, message_properties, redact_url
from quern_producer.topology import dead_queue_arguments, ingest_queue_arguments

ID = "0190a5c2-7a3e-7cc1-9f3b-2d1f0e6b8a11"
FIELDS = {"job_id", "collection", "document_id", "text", "metadata", "op"}


@pytest.mark.parametrize("name,body", load_examples("accepted"))
def test_every_accepted_example_is_valid(name: str, body: Any) -> None:
    validate_job(body)


@pytest.mark.parametrize("name,body", load_examples("rejected"))
def test_every_rejected_example_raises_a_value_error_naming_the_field(name: str, body: Any) -> None:
    with pytest.raises(ValueError) as raised:
        validate_job(body)
    error = raised.value
    assert isinstance(error, InvalidJob)
    if isinstance(body, dict):
        # A body that is an object has a field at fault, and the message names it.
        assert error.field in FIELDS, name
        assert f"`{error.field}`" in str(error)
    else:
        assert error.field is None, name


def test_lengths_count_characters_not_bytes() -> None:
    validate_job({"job_id": ID, "collection": "é" * 128, "document_id": "漢" * 512, "text": ""})
    with pytest.raises(InvalidJob, match="collection.*129 characters"):
        validate_job({"job_id": ID, "collection": "é" * 129, "document_id": "d", "text": ""})
    with pytest.raises(InvalidJob, match="document_id.*513 characters"):
        validate_job({"job_id": ID, "collection": "c", "document_id": "😀" * 513, "text": ""})


@pytest.mark.parametrize("field", ["collection", "document_id", "text"])
def test_a_lone_surrogate_is_not_text(field: str) -> None:
    body = {"job_id": ID, "collection": "c", "document_id": "d", "text": "t"}
    body[field] = "ok\ud800"
    with pytest.raises(InvalidJob) as raised:
        validate_job(body)
    assert raised.value.field == field


@pytest.mark.parametrize("metadata", [{"x": math.nan}, {"x": math.inf}, {"when": object()}, {"s": {1, 2}}])
def test_metadata_must_encode_as_json(metadata: dict[str, Any]) -> None:
    with pytest.raises(InvalidJob) as raised:
        validate_job({"job_id": ID, "collection": "c", "document_id": "d", "text": "t", "metadata": metadata})
    assert raised.value.field == "metadata"


def test_a_job_id_is_the_hyphenated_form_only() -> None:
    for bad in [ID + "\n", " " + ID, "urn:uuid:" + ID, ID.replace("-", "_"), "g" * 8 + ID[8:]]:
        with pytest.raises(InvalidJob, match="job_id"):
            validate_job({"job_id": bad, "collection": "c", "document_id": "d", "text": ""})


def test_bodies_have_the_rust_producers_shape() -> None:
    upsert = Job.upsert("c", "d", "text", metadata={"lang": "en"}, job_id=ID)
    assert list(upsert.to_body().items()) == [
        ("job_id", ID),
        ("collection", "c"),
        ("document_id", "d"),
        ("text", "text"),
        ("metadata", {"lang": "en"}),
        ("op", "upsert"),
    ]
    delete = Job.delete("c", "d", job_id=ID)
    assert delete.to_body() == {"job_id": ID, "collection": "c", "document_id": "d", "text": "", "op": "delete"}
    assert contract.encode_body(delete.to_body()) == (
        b'{"job_id":"' + ID.encode() + b'","collection":"c","document_id":"d","text":"","op":"delete"}'
    )
    # Non-ASCII text goes out as UTF-8, not \u escapes, as serde_json writes it.
    assert contract.encode_body({"text": "é"}) == '{"text":"é"}'.encode()


def test_batches_take_jobs_and_mappings_and_name_the_job_at_fault() -> None:
    job = Job.upsert("c", "a", "x")
    bodies = contract.batch_bodies([job, {"collection": "c", "document_id": "b", "op": "delete"}])
    assert bodies[0]["job_id"] == job.job_id
    assert bodies[1]["op"] == "delete" and bodies[1]["text"] == ""
    assert uuid.UUID(bodies[1]["job_id"]).version == 7

    with pytest.raises(InvalidJob) as raised:
        contract.batch_bodies([job, {"collection": "c", "document_id": "b", "metdata": {}}])
    assert (raised.value.index, raised.value.field) == (1, "metdata")
    assert str(raised.value).startswith("job 1: field `metdata`: unknown field")

    with pytest.raises(InvalidJob, match="job 0: field `text`: missing"):
        contract.batch_bodies([{"collection": "c", "document_id": "b"}])
    with pytest.raises(InvalidJob, match="job 0: field `collection`: missing"):
        contract.batch_bodies([{"document_id": "b", "text": ""}])
    with pytest.raises(InvalidJob, match="job 0: field `text`: must be a string, got null"):
        contract.batch_bodies([{"collection": "c", "document_id": "b", "text": None, "op": "delete"}])
    with pytest.raises(InvalidJob, match="job 2: a job must be a Job or a mapping"):
        contract.batch_bodies([job, job, ["c", "d"]])
    with pytest.raises(InvalidJob, match="iterable of jobs"):
        contract.batch_bodies({"collection": "c", "document_id": "d", "text": ""})


def test_job_ids_are_uuidv7_in_strictly_increasing_order() -> None:
    before = time.time_ns() // 1_000_000
    ids = [new_job_id() for _ in range(20_000)]
    after = time.time_ns() // 1_000_000
    parsed = [uuid.UUID(job_id) for job_id in ids]
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in parsed)
    assert all(str(u) == job_id for u, job_id in zip(parsed, ids))
    # Strictly increasing even within one millisecond: the worker orders jobs of one document by id.
    assert all(a.int < b.int for a, b in zip(parsed, parsed[1:]))
    assert before <= parsed[0].int >> 80 and parsed[-1].int >> 80 <= after + 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_does_not_repeat_its_parents_job_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    # Both processes in the same millisecond, as a pre-forking server's workers may be.
    frozen = time.time_ns()
    monkeypatch.setattr(contract.time, "time_ns", lambda: frozen)
    new_job_id()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write, new_job_id().encode())
        os._exit(0)
    os.close(write)
    parent_id = new_job_id()
    os.waitpid(pid, 0)
    child_id = os.read(read, 100).decode()
    os.close(read)
    assert uuid.UUID(child_id).int >> 80 == uuid.UUID(parent_id).int >> 80
    assert child_id != parent_id


def test_errors_survive_pickling() -> None:
    invalid = pickle.loads(pickle.dumps(InvalidJob("collection", "must not be empty", index=3)))
    assert (invalid.field, invalid.reason, invalid.index) == ("collection", "must not be empty", 3)
    assert str(invalid) == "job 3: field `collection`: must not be empty"
    broker = pickle.loads(pickle.dumps(BrokerError("nack", job_ids=["a", "b"])))
    assert (str(broker), broker.job_ids) == ("nack", ("a", "b"))
    assert issubclass(InvalidJob, ValueError) and issubclass(InvalidJob, quern_producer.QuernError)


def _long_string(value: str) -> bytes:
    return b"S" + struct.pack(">I", len(value)) + value.encode()


def _table(entries: list[bytes]) -> bytes:
    return b"".join(entries)


def _entry(key: str, value: bytes) -> bytes:
    return struct.pack(">B", len(key)) + key.encode() + value


def test_queue_arguments_encode_exactly_as_the_rust_declaration() -> None:
    # What lapin writes for crates/quern-queue/src/topology.rs: a BTreeMap (keys sorted), strings as long strings
    # (S) and the delivery limit as a 32-bit signed LongInt (I).
    topology = Topology("t")
    expected = _table(
        [
            _entry("x-dead-letter-exchange", _long_string("t.dead")),
            _entry("x-dead-letter-strategy", _long_string("at-least-once")),
            _entry("x-delivery-limit", b"I" + struct.pack(">i", 20)),
            _entry("x-overflow", _long_string("reject-publish")),
            _entry("x-queue-type", _long_string("quorum")),
        ]
    )
    pieces: list[bytes] = []
    pika.data.encode_table(pieces, ingest_queue_arguments(topology))
    assert b"".join(pieces) == struct.pack(">I", len(expected)) + expected
    pieces = []
    pika.data.encode_table(pieces, dead_queue_arguments())
    dead = _entry("x-queue-type", _long_string("quorum"))
    assert b"".join(pieces) == struct.pack(">I", len(dead)) + dead


def test_topology_names_and_prefix_rules() -> None:
    topology = Topology()
    assert (topology.work_exchange, topology.ingest_queue, topology.dead_exchange, topology.dead_queue) == (
        "quern",
        "quern.ingest",
        "quern.dead",
        "quern.dead",
    )
    assert Topology("test-1.x_y").ingest_queue == "test-1.x_y.ingest"
    for bad in ["", "a b", "x" * 201, "é"]:
        with pytest.raises(ValueError, match="queue_prefix"):
            Topology(bad)


def test_messages_carry_the_rust_producers_properties() -> None:
    properties = message_properties(ID, "00-" + "1" * 32 + "-" + "2" * 16 + "-01", 1_700_000_000)
    assert properties.content_type == "application/json"
    assert properties.delivery_mode == 2
    assert properties.message_id == ID
    assert properties.timestamp == 1_700_000_000
    assert properties.app_id == "quern-producer"
    assert properties.headers == {"quern-contract": 1, "traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}
    # The contract version goes out as a 64-bit integer (l), as lapin's LongLongInt.
    pieces: list[bytes] = []
    pika.data.encode_table(pieces, {"quern-contract": properties.headers["quern-contract"]})
    assert b"".join(pieces)[-9:] == b"l" + struct.pack(">q", 1)


TRACEPARENT = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")


def test_without_an_active_span_each_job_starts_a_trace() -> None:
    assert tracing.caller_traceparent() is None
    first, second = tracing.new_root_traceparent(), tracing.new_root_traceparent()
    assert TRACEPARENT.fullmatch(first) and first.endswith("-01")
    assert first.split("-")[1] != second.split("-")[1]


def test_the_callers_opentelemetry_span_becomes_the_parent() -> None:
    from opentelemetry import trace

    context = trace.SpanContext(
        trace_id=0x4BF92F3577B34DA6A3CE929D0E0E4736,
        span_id=0x00F067AA0BA902B7,
        is_remote=False,
        trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
    )
    with trace.use_span(trace.NonRecordingSpan(context)):
        assert tracing.caller_traceparent() == "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert tracing.caller_traceparent() is None


def test_without_opentelemetry_installed_nothing_breaks(monkeypatch: pytest.MonkeyPatch) -> None:
    # Both module globals are restored afterwards, so later tests see OpenTelemetry again.
    monkeypatch.setattr(tracing, "_looked_up", False)
    monkeypatch.setattr(tracing, "_current_span", None)
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    monkeypatch.setitem(sys.modules, "opentelemetry.trace", None)
    assert tracing.caller_traceparent() is None
    assert tracing._looked_up and tracing._current_span is None


def _ack(tag: int, multiple: bool = False, nack: bool = False) -> Any:
    method = pika.spec.Basic.Nack(tag, multiple) if nack else pika.spec.Basic.Ack(tag, multiple)
    return SimpleNamespace(method=method)


def test_confirms_settle_batches_by_delivery_tag() -> None:
    confirms = Confirms()
    settled: list[str] = []
    first = Batch(["a", "b", "c"], lambda: settled.append("first"))
    second = Batch(["d", "e"], lambda: settled.append("second"))
    for job_id in first.job_ids:
        confirms.track(first, job_id)
    for job_id in second.job_ids:
        confirms.track(second, job_id)
    confirms.on_ack_nack(_ack(2, multiple=True))
    assert not first.settled and settled == []
    # A returned message comes back before its ack.
    confirms.on_return(None, pika.spec.Basic.Return(312, "NO_ROUTE"), pika.BasicProperties(message_id="c"), b"")
    confirms.on_ack_nack(_ack(3))
    assert first.settled and settled == ["first"]
    assert first.returned == [("c", "312 NO_ROUTE")]
    problem = first.problem(Topology("t"))
    assert problem is not None and problem[1] == ["c"] and "unroutable" in problem[0]
    confirms.on_ack_nack(_ack(5, multiple=True, nack=True))
    assert second.settled and second.nacked == ["d", "e"]
    assert Batch([], lambda: None).problem(Topology("t")) is None


def test_a_failed_session_settles_every_waiting_batch() -> None:
    confirms = Confirms()
    batch = Batch(["a", "b"], lambda: None)
    confirms.track(batch, "a")
    confirms.track(batch, "b")
    confirms.on_ack_nack(_ack(1))
    confirms.fail_all("connection lost")
    assert batch.settled
    assert batch.problem(Topology("t")) == ("connection lost", ["a", "b"])


def test_urls_are_checked_and_passwords_never_shown() -> None:
    assert redact_url("amqp://user:s3cret@host:5672/%2f") == "amqp://user:***@host:5672/%2f"
    assert redact_url("amqp://host/%2f") == "amqp://host/%2f"
    for bad in ["http://user:s3cret@host/", "user:s3cret@host", "amqp://user:s3cret@host:port/", ""]:
        with pytest.raises(ValueError) as raised:
            connection_parameters(bad, "test", 30.0)
        assert "s3cret" not in str(raised.value)
    parameters = connection_parameters("amqp://u:p@h:1234/v?heartbeat=5", "my-app", 7.0)
    assert (parameters.host, parameters.port, parameters.virtual_host, parameters.heartbeat) == ("h", 1234, "v", 5)
    assert parameters.client_properties["connection_name"] == "my-app"
    assert parameters.blocked_connection_timeout == 7.0
