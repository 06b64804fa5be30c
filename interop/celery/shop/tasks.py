"""The web tier's ingestion tasks. ``ingest_document``'s body is the legacy implementation Quern replaces
(:mod:`shop.legacy`): it runs in a legacy Celery worker (``celery -A shop worker``), never in the web tier, which
only calls ``.delay()``."""

from __future__ import annotations

from typing import Any

from shop.celery import app


@app.task(name="shop.tasks.ingest_document")
def ingest_document(
    document_id: Any, text: str, collection: str = "docs", metadata: Any = None, op: str = "upsert"
) -> int:
    from shop.legacy import store

    return store(collection, document_id, text, op)


@app.task(name="shop.tasks.ingest_job")
def ingest_job(job: dict) -> None:
    raise NotImplementedError("the legacy worker's body; Quern runs this task")


@app.task(name="shop.tasks.send_welcome_email")
def send_welcome_email(user_id: int) -> None:
    """A task that is not ingestion: routed to Quern's queue by mistake, it must be dead-lettered, not lost."""
