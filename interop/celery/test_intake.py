"""Celery intake: a Django-style web tier keeps calling ``ingest_document.delay(...)``; quern-worker, started with
``--celery-queue`` and ``--celery-task``, takes the task messages from the routed queue and processes them as
jobs, keeping Celery's task id as the job id. Messages it cannot take land in the dead-letter queue with a
reason that says exactly why, and nothing is acked and lost.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any, Callable

from shop.celery import app, route_to
from shop.tasks import ingest_document, ingest_job, send_welcome_email
from support import Broker, ScratchDatabase, Worker, unique_name, wait_until

INGEST_TASKS = ("shop.tasks.ingest_document", "shop.tasks.ingest_job")


def document(label: str) -> str:
    return " ".join(f"{label} paragraph {n}: the quick brown fox jumps over the lazy dog" for n in range(40))


def wait_for_status(
    database: ScratchDatabase, job_ids: Sequence[str], worker: Worker, status: str = "succeeded", timeout: float = 90
) -> None:
    def done() -> bool:
        assert worker.process.poll() is None, f"the worker exited: {worker.log_path.read_text()[-3000:]}"
        statuses = database.job_statuses(job_ids)
        return len(statuses) == len(set(job_ids)) and set(statuses.values()) == {status}

    assert wait_until(done, timeout, 0.25), f"jobs not all {status}: {database.job_statuses(job_ids)}"


def documents(database: ScratchDatabase, collection: str) -> dict[str, tuple[int, Any]]:
    rows = database.query(
        "SELECT document_id, chunk_count, metadata FROM quern_documents WHERE collection = %s", (collection,)
    )
    return {document_id: (chunks, metadata) for document_id, chunks, metadata in rows}


def test_delay_and_apply_async_from_celery_are_processed_with_celerys_task_id(
    start_worker: Callable[..., Worker], database: ScratchDatabase, broker: Broker, celery_queue: str
) -> None:
    # Quern first: it declares the queue as Celery would, so Celery's own declaration then matches it.
    worker = start_worker()
    assert wait_until(lambda: broker.queue_exists(celery_queue), 60), "the worker declared the Celery queue"
    route_to(celery_queue, *INGEST_TASKS)
    collection = unique_name("celery")

    by_delay = ingest_document.delay(42, document("pk 42"), collection=collection)
    by_apply = ingest_document.apply_async(
        args=("guide.md", document("guide")), kwargs={"collection": collection, "metadata": {"lang": "en"}}
    )
    by_object = ingest_job.delay({"collection": collection, "document_id": "whole.md", "text": document("whole")})
    task_ids = [by_delay.id, by_apply.id, by_object.id]
    assert all(uuid.UUID(task_id) for task_id in task_ids)
    wait_for_status(database, task_ids, worker)

    stored = documents(database, collection)
    assert set(stored) == {"42", "guide.md", "whole.md"}, "a Django primary key becomes the document id"
    assert all(chunks >= 2 for chunks, _ in stored.values()), stored
    assert stored["guide.md"][1] == {"lang": "en"}
    chunk_rows = database.query("SELECT count(*) FROM quern_chunks WHERE collection = %s", (collection,))[0][0]
    assert chunk_rows == sum(chunks for chunks, _ in stored.values())

    gone = ingest_document.delay("guide.md", "", collection=collection, op="delete")
    wait_for_status(database, [gone.id], worker)
    assert set(documents(database, collection)) == {"42", "whole.md"}
    assert broker.ready_count(celery_queue) == 0


def test_celery_declares_the_queue_first_and_a_worker_started_later_takes_the_backlog(
    start_worker: Callable[..., Worker], database: ScratchDatabase, broker: Broker, celery_queue: str
) -> None:
    route_to(celery_queue, *INGEST_TASKS)
    collection = unique_name("celery")
    sent = [ingest_document.delay(f"doc-{i}", document(f"doc {i}"), collection=collection).id for i in range(10)]
    assert broker.ready_count(celery_queue) == 10, "Celery declared its queue and the tasks wait in it"

    worker = start_worker()
    wait_for_status(database, sent, worker)
    assert len(documents(database, collection)) == 10


def test_celery_protocol_1_messages_are_taken_too(
    start_worker: Callable[..., Worker], database: ScratchDatabase, broker: Broker, celery_queue: str
) -> None:
    """Celery before 4.0 spoke protocol 1 (task, id and arguments in the body, no headers); 5.x still can."""
    worker = start_worker()
    assert wait_until(lambda: broker.queue_exists(celery_queue), 60)
    route_to(celery_queue, *INGEST_TASKS)
    collection = unique_name("celery")
    app.conf.task_protocol = 1
    try:
        sent = ingest_document.delay("old-protocol.md", document("old protocol"), collection=collection)
    finally:
        app.conf.task_protocol = 2
    wait_for_status(database, [sent.id], worker)
    assert set(documents(database, collection)) == {"old-protocol.md"}


def test_a_redelivered_task_id_is_processed_once_and_custom_ids_are_stable(
    start_worker: Callable[..., Worker], database: ScratchDatabase, broker: Broker, celery_queue: str
) -> None:
    worker = start_worker()
    assert wait_until(lambda: broker.queue_exists(celery_queue), 60)
    route_to(celery_queue, *INGEST_TASKS)
    collection = unique_name("celery")
    text = document("twice")
    first = ingest_document.apply_async(args=("twice.md", text, collection))
    wait_for_status(database, [first.id], worker)
    # What a Celery retry or a broker redelivery looks like: the same task id again.
    again = ingest_document.apply_async(args=("twice.md", text, collection), task_id=first.id)
    custom = ingest_document.apply_async(args=("custom.md", text, collection), task_id="import-2026-12-01-custom")

    def logged_redelivery() -> bool:
        return any(
            "already succeeded" in line.get("message", "") and (line.get("span") or {}).get("job_id") == first.id
            for line in worker.log_lines()
        )

    assert wait_until(logged_redelivery, 60), "the second delivery was recognised as the same job"
    assert wait_until(lambda: "custom.md" in documents(database, collection), 60)
    rows = database.query("SELECT count(*), min(status) FROM quern_jobs WHERE job_id = %s::uuid", (again.id,))
    assert rows == [(1, "succeeded")]
    # A task id that is not a UUID still makes one job id, the same on every delivery.
    custom_jobs = database.query(
        "SELECT count(*) FROM quern_jobs WHERE collection = %s AND document_id = 'custom.md'", (collection,)
    )
    assert custom_jobs == [(1,)]
    assert broker.ready_count(celery_queue) == 0
    assert custom.id == "import-2026-12-01-custom"


def test_tasks_quern_cannot_take_go_to_the_dead_letter_queue_with_their_reason(
    start_worker: Callable[..., Worker], database: ScratchDatabase, broker: Broker, celery_queue: str, prefix: str
) -> None:
    worker = start_worker()
    assert wait_until(lambda: broker.queue_exists(celery_queue), 60)
    route_to(celery_queue, *INGEST_TASKS, "shop.tasks.send_welcome_email")
    collection = unique_name("celery")

    other_task = send_welcome_email.delay(7)
    pickled = ingest_document.apply_async(args=("p.md", "text", collection), serializer="pickle")
    # send_task skips Celery's own argument check, as a producer in another language would.
    extra_keyword = app.send_task(
        "shop.tasks.ingest_document", args=["k.md", "text", collection], kwargs={"user_id": 5}, queue=celery_queue
    )
    too_many = app.send_task("shop.tasks.ingest_document", args=["m.md", "t", collection, "x"], queue=celery_queue)
    empty_id = ingest_document.delay("", "text", collection=collection)
    good = ingest_document.delay("after-the-bad-ones.md", document("good"), collection=collection)
    wait_for_status(database, [good.id], worker)
    expected = {
        other_task.id: ("celery-task", "`shop.tasks.send_welcome_email`"),
        pickled.id: ("celery-serializer", "task_serializer = 'json'"),
        extra_keyword.id: ("celery-arguments", "keyword argument `user_id` maps to no job field"),
        too_many.id: ("celery-arguments", "has 4 positional arguments"),
        empty_id.id: ("contract", "field `document_id`: must not be empty"),
    }

    dead = f"{prefix}.dead"
    assert wait_until(lambda: broker.ready_count(dead) == len(expected), 60), broker.ready_count(dead)
    letters = broker.take_all(dead)
    seen: dict[str, tuple[str, str]] = {}
    for properties, body in letters:
        headers = properties.headers or {}
        task_id = headers["id"]
        assert headers["task"], "the Celery message is kept whole, headers included"
        seen[task_id] = (headers["quern-reason"], headers["quern-error"])
        if task_id != pickled.id:
            assert json.loads(body)[0], "the body is the task's own, byte for byte"
    assert set(seen) == set(expected)
    for task_id, (reason, says) in expected.items():
        assert seen[task_id][0] == reason, (task_id, seen[task_id])
        assert says in seen[task_id][1], seen[task_id]
    statuses = database.job_statuses(list(expected))
    assert set(statuses.values()) == {"dead"}, "each refusal is recorded under the task's id"
    assert broker.ready_count(celery_queue) == 0
    assert worker.process.poll() is None


def test_a_task_retried_through_querns_delay_queues_comes_back_as_the_same_celery_task(
    start_worker: Callable[..., Worker], database: ScratchDatabase, broker: Broker, celery_queue: str, prefix: str
) -> None:
    """A retry republishes the message whole (Celery's headers and body) to a delay queue, which returns it to
    Quern's own ingest queue: there it must still be read as the Celery task it is."""
    route_to(celery_queue, *INGEST_TASKS)
    collection = unique_name("celery")
    sent = ingest_document.delay("retried.md", document("retried"), collection=collection)
    [(properties, body)] = broker.take_all(celery_queue)
    worker = start_worker()
    assert wait_until(lambda: broker.queue_exists(f"{prefix}.retry.100ms"), 60), "the worker declared its queues"
    # What the worker's republisher does after a failed attempt: the same message, one attempt counted.
    properties.headers = {**(properties.headers or {}), "quern-attempts": 1}
    broker.run(lambda channel: channel.basic_publish("", f"{prefix}.retry.100ms", body, properties))
    wait_for_status(database, [sent.id], worker)
    assert set(documents(database, collection)) == {"retried.md"}
    spans = [line["span"] for line in worker.log_lines() if (line.get("span") or {}).get("job_id") == sent.id]
    assert spans and {span["attempt"] for span in spans} == {2}, "the failed attempt it carried was counted"


def test_a_dead_lettered_task_replays_to_the_celery_queue_it_came_from(
    start_worker: Callable[..., Worker], database: ScratchDatabase, broker: Broker, celery_queue: str, prefix: str
) -> None:
    import os
    import subprocess

    from support import AMQP_URL, binary

    worker = start_worker()
    assert wait_until(lambda: broker.queue_exists(celery_queue), 60)
    refused = app.send_task(
        "shop.tasks.ingest_document", args=["r.md", "text", "c"], kwargs={"user_id": 5}, queue=celery_queue
    )
    assert wait_until(lambda: broker.ready_count(f"{prefix}.dead") == 1, 60)
    worker.stop()

    environment = {key: value for key, value in os.environ.items() if not key.startswith("QUERN_")}
    environment.update({"QUERN_AMQP_URL": AMQP_URL, "QUERN_QUEUE_PREFIX": prefix})
    replay = subprocess.run(
        [str(binary("quern")), "dlq", "replay", "--reason", "celery-arguments"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert replay.returncode == 0, replay.stderr
    assert broker.ready_count(f"{prefix}.dead") == 0
    [(properties, _)] = broker.take_all(celery_queue)
    headers = properties.headers or {}
    assert (headers["task"], headers["id"]) == ("shop.tasks.ingest_document", refused.id)
    assert headers["quern-replay-count"] == 1
