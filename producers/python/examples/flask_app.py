"""A minimal web tier: ``POST /documents`` with ``{"collection", "document_id", "text", "metadata"?}`` enqueues an
ingestion job and answers ``202 {"job_id": ...}``; ``422`` when the job breaks the contract (the message names
the field), ``503`` when RabbitMQ cannot take it.

Run it (Flask is needed for the example only: ``pip install flask``)::

    QUERN_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f python examples/flask_app.py --port 8000
    curl -X POST localhost:8000/documents -H 'content-type: application/json' \\
         -d '{"collection": "articles", "document_id": "a.md", "text": "Hello"}'

One producer serves every request thread: it is thread safe. It is created on the first request rather than at
import, so the app starts (and answers 503) while the broker is still down, and connects once it is up.
"""

from __future__ import annotations

import argparse
import os
import threading
from typing import Any, Callable

from flask import Flask, jsonify, request

from quern_producer import BrokerError, Producer


def create_app(producer_factory: Callable[[], Producer] | None = None) -> Flask:
    """The app; ``producer_factory`` builds the shared producer (default: from QUERN_AMQP_URL and
    QUERN_QUEUE_PREFIX)."""
    factory = producer_factory or (
        lambda: Producer(
            os.environ.get("QUERN_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
            queue_prefix=os.environ.get("QUERN_QUEUE_PREFIX", "quern"),
        )
    )
    app = Flask(__name__)
    lock = threading.Lock()
    # One producer per process, outliving requests: one connection, not one per request.
    shared: dict[str, Producer] = {}

    def producer() -> Producer:
        # Built once, by whichever request thread comes first; a failed attempt is retried by the next request.
        with lock:
            if "producer" not in shared:
                shared["producer"] = factory()
            return shared["producer"]

    @app.post("/documents")
    def enqueue_document() -> tuple[Any, int]:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return jsonify(error="the body must be a JSON object"), 422
        # No checks here: the producer checks every field and names the one at fault.
        field: Callable[[str], Any] = body.get
        try:
            job_id = producer().enqueue(
                field("collection"), field("document_id"), field("text"), metadata=field("metadata")
            )
        except ValueError as error:
            return jsonify(error=str(error)), 422
        except BrokerError as error:
            app.logger.warning("job not enqueued: %s", error)
            return jsonify(error="the job queue is unavailable; try again later"), 503
        return jsonify(job_id=job_id), 202

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    arguments = parser.parse_args()
    # Flask's development server, threaded: every request thread shares the one producer.
    create_app().run(host=arguments.host, port=arguments.port, threaded=True)


if __name__ == "__main__":
    main()
