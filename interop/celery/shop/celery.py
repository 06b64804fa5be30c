"""The web tier's Celery app. Its broker comes from ``CELERY_BROKER_URL`` (the tests point it at their RabbitMQ);
the only Quern-specific line a team adds is the route of the ingestion task to a queue of its own."""

from __future__ import annotations

import os

from celery import Celery

app = Celery(
    "shop", broker=os.environ.get("CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//"), include=["shop.tasks"]
)
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    # The one line a migration adds: the ingestion task goes to a queue of its own, which Quern consumes.
    task_routes={"shop.tasks.ingest_document": {"queue": "ingest"}},
)


def route_to(queue: str, *tasks: str, exchange: str | None = None) -> None:
    """Routes ``tasks`` to ``queue`` (through ``exchange`` when given, which a shadow run needs)."""
    route = {"queue": queue} if exchange is None else {"queue": queue, "exchange": exchange, "routing_key": queue}
    app.conf.task_routes = {task: dict(route) for task in tasks}
    # Celery reads its routes once; a web tier sets them at start, the tests once per test.
    app.amqp.flush_routes()
    app.amqp.router = app.amqp.Router()
