"""The Celery baseline's app and its one task: Quern's job, written the way a typical Celery codebase would.

Per document: chunk the text (semantic-text-splitter, the Python binding of the `text-splitter` crate Quern uses),
embed the chunks in batches of B through an OpenAI-compatible /v1/embeddings API (simple retry on 408/429/5xx and
connection errors, honouring Retry-After), then in ONE transaction delete the document's old chunks, insert the new
ones (psycopg 3 executemany, pgvector's numpy adapter) and record the job's commit time. The task is acked late, i.e.
by the worker's main process after the task has returned.

Configured through environment variables set by runner.py (a `celery worker` reads no command-line settings of ours):
QB_AMQP_URL, QB_QUEUE, QB_QUEUE_TYPE, QB_DATABASE_URL, QB_EMBEDDING_URL, QB_EMBEDDING_MODEL, QB_EMBEDDING_DIM,
QB_CONCURRENCY, QB_BATCH_SIZE, QB_CHUNK_SIZE, QB_CHUNK_OVERLAP, QB_READY_FILE.
"""

from __future__ import annotations

import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import psycopg
import requests
from celery import Celery
from celery.signals import worker_process_init, worker_ready
from pgvector.psycopg import register_vector
from semantic_text_splitter import TextSplitter

QUEUE = os.environ.get("QB_QUEUE", "quern_celery_baseline")
QUEUE_TYPE = os.environ.get("QB_QUEUE_TYPE", "quorum")
DATABASE_URL = os.environ.get("QB_DATABASE_URL", "postgresql://postgres@127.0.0.1:5433/postgres")
EMBEDDING_MODEL = os.environ.get("QB_EMBEDDING_MODEL", "quern-fake-lexical")
DIM = int(os.environ.get("QB_EMBEDDING_DIM", "384"))
CONCURRENCY = int(os.environ.get("QB_CONCURRENCY", "1"))
BATCH_SIZE = int(os.environ.get("QB_BATCH_SIZE", "32"))
CHUNK_SIZE = int(os.environ.get("QB_CHUNK_SIZE", "1000"))
CHUNK_OVERLAP = int(os.environ.get("QB_CHUNK_OVERLAP", "200"))
EMBEDDING_ATTEMPTS = 5
EMBEDDING_TIMEOUT_SECS = 30


def embeddings_endpoint(url: str) -> str:
    """Accepts a base URL, a `.../v1` URL or the full `.../embeddings` endpoint, as Quern does."""
    url = url.rstrip("/")
    if url.endswith("/embeddings"):
        return url
    if url.endswith("/v1"):
        return url + "/embeddings"
    return url + "/v1/embeddings"


EMBEDDINGS_URL = embeddings_endpoint(os.environ.get("QB_EMBEDDING_URL", "http://127.0.0.1:8089"))

app = Celery("quern_celery_baseline", broker=os.environ.get("QB_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"))
app.conf.update(
    # One queue, named per run; the same durable quorum type as Quern's work queue (QB_QUEUE_TYPE=classic to compare).
    task_default_queue=QUEUE,
    task_default_exchange=QUEUE,
    # Topic, not direct: Celery's native delayed delivery (what carries task retries on quorum queues) needs it.
    task_default_exchange_type="topic",
    task_default_routing_key=QUEUE,
    task_default_queue_type=QUEUE_TYPE,
    # At-least-once like Quern: ack after the task returns; a pool process that dies gives its message back.
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    # Publisher confirms, as Quern's producer waits for (apply_async returns once the broker confirmed).
    broker_transport_options={"confirm_publish": True},
    broker_connection_retry_on_startup=True,
    # No result backend, no events, no remote control: nothing but the work queue on the broker.
    result_backend=None,
    task_ignore_result=True,
    worker_send_task_events=False,
    task_send_sent_event=False,
    worker_enable_remote_control=False,
    task_serializer="json",
    accept_content=["json"],
)

splitter = TextSplitter(CHUNK_SIZE, overlap=CHUNK_OVERLAP)  # characters; whitespace trimmed, like quern-core


class TransientError(Exception):
    """Worth retrying the whole task (the embedding API kept failing, or Postgres went away)."""


class PermanentError(Exception):
    """Retrying cannot help (the embedding API refused the request, or answered nonsense)."""


# Per pool process: one Postgres connection, a thread pool of C for embedding requests, one HTTP session per thread.
_state = threading.local()
_db: psycopg.Connection | None = None
_executor: ThreadPoolExecutor | None = None


def _session() -> requests.Session:
    session = getattr(_state, "session", None)
    if session is None:
        session = _state.session = requests.Session()
    return session


def _connection() -> psycopg.Connection:
    global _db
    if _db is None or _db.closed or _db.broken:
        _db = psycopg.connect(DATABASE_URL, autocommit=True)
        register_vector(_db)
    return _db


@worker_process_init.connect
def _init_pool_process(**_kwargs) -> None:
    """Runs in each prefork child after the fork: open its own connection and thread pool."""
    global _executor
    _connection()
    if CONCURRENCY > 1:
        _executor = ThreadPoolExecutor(max_workers=CONCURRENCY, thread_name_prefix="embed")


@worker_ready.connect
def _announce_ready(**_kwargs) -> None:
    """The worker consumes and its pool processes are started: tell the runner."""
    ready_file = os.environ.get("QB_READY_FILE")
    if ready_file:
        with open(ready_file, "w") as f:
            f.write(str(os.getpid()))


def _retry_delay(response: requests.Response | None, attempt: int) -> float:
    if response is not None:
        retry_after = response.headers.get("Retry-After")
        if retry_after:
            try:
                return min(float(retry_after), 30.0)
            except ValueError:
                pass
    return random.uniform(0, min(0.25 * 2**attempt, 5.0))  # exponential backoff with full jitter


def embed(texts: list[str]) -> list[np.ndarray]:
    """One /v1/embeddings request for `texts`, retried a few times on 408/429/5xx and connection errors."""
    last_error = ""
    for attempt in range(EMBEDDING_ATTEMPTS):
        response = None
        try:
            response = _session().post(
                EMBEDDINGS_URL, json={"model": EMBEDDING_MODEL, "input": texts}, timeout=EMBEDDING_TIMEOUT_SECS
            )
        except (requests.ConnectionError, requests.Timeout) as e:
            last_error = f"{type(e).__name__}: {e}"
        else:
            if response.status_code == 200:
                data = sorted(response.json()["data"], key=lambda d: d["index"])
                if len(data) != len(texts):
                    raise PermanentError(f"{len(data)} embeddings for {len(texts)} inputs")
                vectors = [np.asarray(d["embedding"], dtype=np.float32) for d in data]
                if any(v.shape != (DIM,) for v in vectors):
                    raise PermanentError(f"an embedding is not of dimension {DIM}")
                return vectors
            last_error = f"HTTP {response.status_code}: {response.text[:200]}"
            if response.status_code not in (408, 429) and response.status_code < 500:
                raise PermanentError(last_error)
        if attempt + 1 < EMBEDDING_ATTEMPTS:
            time.sleep(_retry_delay(response, attempt))
    raise TransientError(f"embedding failed {EMBEDDING_ATTEMPTS} times; last: {last_error}")


@app.task(
    bind=True,
    name="quern_celery_baseline.ingest_document",
    autoretry_for=(TransientError, psycopg.OperationalError),
    retry_backoff=True,
    max_retries=5,
)
def ingest_document(self, collection: str, document_id: str, text: str, enqueued_at: float) -> int:
    chunks = splitter.chunks(text)
    batches = [chunks[i : i + BATCH_SIZE] for i in range(0, len(chunks), BATCH_SIZE)]
    if _executor is None or len(batches) <= 1:
        embedded = [embed(batch) for batch in batches]  # C = 1: this document's batches one after another
    else:
        embedded = list(_executor.map(embed, batches))  # C > 1: up to C of this document's batches at once
    vectors = [v for batch in embedded for v in batch]

    conn = _connection()
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("DELETE FROM celery_chunks WHERE collection = %s AND document_id = %s", (collection, document_id))
        cur.executemany(
            "INSERT INTO celery_chunks (collection, document_id, chunk_index, content, embedding)"
            " VALUES (%s, %s, %s, %s, %s)",
            [(collection, document_id, i, chunk, vector) for i, (chunk, vector) in enumerate(zip(chunks, vectors))],
        )
        cur.execute(
            "INSERT INTO celery_jobs (job_id, collection, document_id, enqueued_at, committed_at, chunks)"
            " VALUES (%s, %s, %s, to_timestamp(%s), clock_timestamp(), %s)"
            " ON CONFLICT (job_id) DO UPDATE SET committed_at = excluded.committed_at, chunks = excluded.chunks",
            (self.request.id, collection, document_id, enqueued_at, len(chunks)),
        )
    return len(chunks)
