"""Fixtures of the Celery suite: the real services, a database and fake embedder per module, and per test a
queue prefix, a Celery queue of its own (deleted afterwards) and a quern-worker taking the web tier's tasks.

The helpers that start the Rust binaries and look at RabbitMQ and Postgres are the Python producer's test
helpers (producers/python/tests/support.py), shared rather than copied.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "producers" / "python" / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from support import (  # noqa: E402, F401 - database and embedder are fixtures
    AMQP_URL,
    Broker,
    FakeEmbedder,
    ScratchDatabase,
    Worker,
    database,
    embedder,
    unique_name,
)

# The web tier's Celery app talks to the tests' RabbitMQ (kombu reads "%2f" as the default virtual host too).
os.environ.setdefault("CELERY_BROKER_URL", AMQP_URL)

#: The mappings a migrating team would give: the Django task's positional arguments, and a job-object task.
TASKS = "shop.tasks.ingest_document=document_id,text,collection;shop.tasks.ingest_job=job"


@pytest.fixture(scope="session")
def broker() -> Broker:
    return Broker()


@pytest.fixture
def prefix(broker: Broker) -> Iterator[str]:
    name = unique_name("qt_celery")
    yield name
    broker.delete_topology(name)


@pytest.fixture
def celery_queue(broker: Broker) -> Iterator[str]:
    """A Celery queue no other test uses; it and its exchange are deleted afterwards."""
    name = unique_name("celery_ingest")
    yield name

    def delete(channel: Any) -> None:
        channel.queue_delete(name)
        channel.exchange_delete(name)

    broker.run(delete)


@pytest.fixture
def start_worker(
    database: ScratchDatabase, embedder: FakeEmbedder, prefix: str, celery_queue: str, tmp_path: Path
) -> Iterator[Callable[..., Worker]]:
    """Starts quern-worker on the test's prefix, taking the Celery tasks of ``TASKS`` from its Celery queue."""
    workers: list[Worker] = []

    def start(celery: bool = True, **settings: str) -> Worker:
        """``celery=False``: a plain worker, taking Quern jobs only (the Celery queue is the legacy worker's)."""
        env = {"QUERN_CELERY_QUEUE": celery_queue, "QUERN_CELERY_TASK": TASKS} if celery else {}
        env.update(settings)
        worker = Worker(prefix, database.url, embedder.url, tmp_path / f"worker-{len(workers)}.log", env)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture
def legacy_worker(
    database: ScratchDatabase, embedder: FakeEmbedder, celery_queue: str, tmp_path: Path
) -> Iterator[subprocess.Popen]:  # type: ignore[type-arg]
    """The legacy Celery worker, consuming the Celery queue (one process, one task at a time)."""
    database.execute("CREATE EXTENSION IF NOT EXISTS vector")
    environment = {
        **os.environ,
        "LEGACY_DATABASE_URL": database.url,
        "LEGACY_EMBEDDING_URL": embedder.url,
        "CELERY_BROKER_URL": os.environ["CELERY_BROKER_URL"],
    }
    log = open(tmp_path / "legacy-worker.log", "ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "shop", "worker", "-Q", celery_queue, "--pool", "solo",
         "--without-heartbeat", "--without-gossip", "--without-mingle", "-l", "warning"],
        cwd=Path(__file__).resolve().parent, env=environment, stdout=log, stderr=log,
    )
    yield process
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()
