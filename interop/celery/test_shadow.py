"""A shadow run: the legacy Celery worker (shop.legacy, in a real ``celery worker`` process) keeps consuming its
queue and writing its table, while ``quern-worker --shadow`` consumes a copy of the same task messages into a schema
of its own; ``quern shadow report`` then compares the two per document.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
from shop.celery import route_to
from shop.tasks import ingest_document
from support import Broker, ScratchDatabase, Worker, binary, unique_name, wait_until

@pytest.fixture
def shadow_topology(broker: Broker, prefix: str, celery_queue: str) -> Iterator[str]:
    """The shadow run's queue prefix; its queues (the copy included) are deleted afterwards."""
    shadow = f"{prefix}.shadow"
    yield shadow
    broker.delete_topology(shadow, extra_queues=[f"{shadow}.copy.{celery_queue}"])


def report(database: ScratchDatabase, *flags: str) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    environment = {key: value for key, value in os.environ.items() if not key.startswith("QUERN_")}
    environment["QUERN_DATABASE_URL"] = database.url
    return subprocess.run(
        [str(binary("quern")), "shadow", "report", "--legacy-table", "legacy_chunks", *flags],
        env=environment, capture_output=True, text=True, timeout=120,
    )


def test_a_shadow_run_beside_the_legacy_worker_and_its_parity_report(
    start_worker: Callable[..., Worker],
    legacy_worker: Any,
    database: ScratchDatabase,
    broker: Broker,
    celery_queue: str,
    prefix: str,
    shadow_topology: str,
) -> None:
    shadow = start_worker(QUERN_SHADOW="true")
    copy_queue = f"{shadow_topology}.copy.{celery_queue}"
    assert wait_until(lambda: broker.queue_exists(copy_queue), 60), "the shadow bound its copy of the Celery queue"
    # A shadow run needs the route to name the exchange: Celery publishes to the default exchange otherwise, and
    # nothing can be bound there.
    route_to(celery_queue, "shop.tasks.ingest_document", exchange=celery_queue)
    collection = unique_name("shadow")
    texts = {f"doc-{i}.md": f"document {i}: the quick brown fox jumps over the lazy dog" for i in range(8)}
    texts["long.md"] = " ".join(f"sentence {n} of a long document about foxes and dogs." for n in range(60))
    sent = [ingest_document.delay(document_id, text, collection=collection).id for document_id, text in texts.items()]

    def legacy_rows() -> set[str]:
        try:
            rows = database.query("SELECT DISTINCT document_id FROM legacy_chunks WHERE collection = %s", (collection,))
        except Exception:  # noqa: BLE001 - the legacy worker creates its table with its first task
            return set()
        return {row[0] for row in rows}

    def shadow_done() -> bool:
        try:
            rows = database.query(
                "SELECT count(*) FROM quern_shadow.quern_jobs WHERE job_id = ANY(%s::uuid[]) AND status = 'succeeded'",
                (sent,),
            )
        except Exception:  # noqa: BLE001 - the shadow's tables appear once it has migrated
            return False
        return rows[0][0] == len(sent)

    assert wait_until(lambda: legacy_rows() == set(texts), 120), f"the legacy worker stored {legacy_rows()}"
    assert wait_until(shadow_done, 120), shadow.log_path.read_text()[-3000:]
    assert broker.ready_count(celery_queue) == 0, "the legacy worker got every message"
    assert not broker.queue_exists(f"{prefix}.ingest"), "the shadow never declared production's queues"
    production = database.query("SELECT to_regclass('public.quern_chunks') IS NULL")
    assert production == [(True,)], "nor touched production's tables"

    # Known differences: one document the legacy worker lost, one chunk it stored differently, one document
    # only it has (sent straight to its queue, past the shadow's copy).
    database.execute("DELETE FROM legacy_chunks WHERE collection = %s AND document_id = 'doc-0.md'", (collection,))
    database.execute(
        "UPDATE legacy_chunks SET content = upper(content) WHERE collection = %s AND document_id = 'doc-1.md'",
        (collection,),
    )
    from shop.celery import app

    app.send_task(
        "shop.tasks.ingest_document", args=["legacy-only.md", "only the legacy worker saw this", collection],
        exchange="", routing_key=celery_queue,
    )
    assert wait_until(lambda: "legacy-only.md" in legacy_rows(), 60)

    # A task the shadow cannot take dies in the shadow's own dead-letter queue, and would replay to its copy queue
    # alone: never to the legacy worker again.
    app.send_task(
        "shop.tasks.ingest_document", args=["odd.md", "text", collection], kwargs={"user_id": 5},
        exchange=celery_queue, routing_key=celery_queue,
    )
    assert wait_until(lambda: broker.ready_count(f"{shadow_topology}.dead") == 1, 60)
    [(properties, _)] = broker.take_all(f"{shadow_topology}.dead")
    headers = properties.headers or {}
    assert (headers["quern-original-exchange"], headers["quern-original-routing-key"]) == ("", copy_queue)
    assert headers["quern-reason"] == "celery-arguments"

    printed = report(database, "--json")
    assert printed.returncode == 0, printed.stderr
    verdict = json.loads(printed.stdout)
    assert verdict["documents_compared"] == 10
    assert (verdict["missing_in_shadow"], verdict["missing_in_legacy"]) == (1, 1)
    assert (verdict["chunk_count_differs"], verdict["text_differs"], verdict["embedding_differs"]) == (1, 1, 0)
    assert verdict["documents_at_parity"] == 6
    assert verdict["parity_percent"] == pytest.approx(60.0)
    assert verdict["embeddings_compared"] >= 7 and verdict["lowest_cosine"] > 0.999, "the same model on both sides"
    worst = {(d["document_id"], d["differences"][0]["kind"]) for d in verdict["worst"]}
    assert worst == {
        ("doc-0.md", "missing_in_legacy"),
        ("legacy-only.md", "missing_in_shadow"),
        ("long.md", "chunk_count"),
        ("doc-1.md", "text"),
    }

    text = report(database)
    assert "at parity:           6 (60.0%)" in text.stdout and "long.md" in text.stdout, text.stdout
    print(text.stdout)
    assert report(database, "--min-parity", "90").returncode == 4
    assert report(database, "--min-parity", "50").returncode == 0
    sampled = json.loads(report(database, "--json", "--sample", "4").stdout)
    assert sampled["documents_compared"] == 4
    assert report(database, "--legacy-content-column", "text; DROP").returncode == 1
