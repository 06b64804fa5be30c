"""The job contract v1 on the Python side: validation, job ids and the JSON body.

The rules are those of the worker (``crates/quern-core/src/job.rs``) and of ``schema/job-v1.schema.json``; the
shared examples in ``schema/examples`` prove that they accept and reject the same bodies. Every producer method
validates its jobs with :func:`validate_job` before anything is sent.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidJob

#: Version of the contract this package speaks; every message carries it in the ``quern-contract`` header.
CONTRACT_VERSION = 1
#: Inclusive bound on ``collection``, in Unicode characters (code points, what JSON Schema's maxLength counts).
COLLECTION_MAX_CHARS = 128
#: Inclusive bound on ``document_id``, in Unicode characters.
DOCUMENT_ID_MAX_CHARS = 512
#: The two operations a job may ask for.
OPS = ("upsert", "delete")

# The 36-character hyphenated form only, as the schema's pattern and the worker's parser demand (no braces, no
# `urn:`, no bare hex). Used with fullmatch: `$` would also accept a trailing newline.
_UUID_PATTERN = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# The fields a job given to enqueue_many as a mapping may have.
_FIELDS = ("job_id", "collection", "document_id", "text", "metadata", "op")


def validate_job(body: Any) -> None:
    """Checks a job body (a JSON object as a mapping, ``job_id`` included) against contract v1.

    Raises :class:`~quern_producer.InvalidJob` (a ``ValueError``) naming the field at fault. Unknown fields are
    ignored, as the worker ignores them.
    """
    if not isinstance(body, Mapping):
        raise InvalidJob(None, f"a job body must be a JSON object (a mapping), got {_json_type(body)}")
    for name in ("job_id", "collection", "document_id"):
        if name not in body:
            raise InvalidJob(name, "missing (required)")
    job_id = body["job_id"]
    if not isinstance(job_id, str):
        raise InvalidJob("job_id", f"must be a string, got {_json_type(job_id)}")
    if not _UUID_PATTERN.fullmatch(job_id):
        raise InvalidJob("job_id", f"{_shorten(job_id)} is not a hyphenated UUID (8-4-4-4-12 hex digits)")
    _check_name("collection", body["collection"], COLLECTION_MAX_CHARS)
    _check_name("document_id", body["document_id"], DOCUMENT_ID_MAX_CHARS)
    op = body.get("op", "upsert")
    if not isinstance(op, str) or op not in OPS:
        raise InvalidJob("op", f'must be "upsert" or "delete", got {_describe(op)}')
    if "text" in body:
        _check_text("text", body["text"])
    elif op == "upsert":
        raise InvalidJob("text", "missing (required when op is upsert)")
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, Mapping):
            raise InvalidJob("metadata", f"must be a JSON object (a mapping) or None, got {_json_type(metadata)}")
        try:
            _encode(metadata)
        except (TypeError, ValueError) as error:
            raise InvalidJob("metadata", f"cannot be encoded as JSON: {error}") from None


def _check_name(name: str, value: Any, limit: int) -> None:
    _check_text(name, value)
    chars = len(value)
    if chars == 0:
        raise InvalidJob(name, "must not be empty")
    if chars > limit:
        raise InvalidJob(name, f"is {chars} characters long, the limit is {limit}")


def _check_text(name: str, value: Any) -> None:
    if not isinstance(value, str):
        raise InvalidJob(name, f"must be a string, got {_json_type(value)}")
    # A lone surrogate is a Python str but no Unicode text: it has no UTF-8 form. isascii() is O(1) in CPython,
    # so plain ASCII text costs nothing here.
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as error:
            raise InvalidJob(name, f"is not valid Unicode text (a lone surrogate at index {error.start})") from None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return f"a {type(value).__name__} (not JSON)"


def _describe(value: Any) -> str:
    return _shorten(value) if isinstance(value, str) else _json_type(value)


def _shorten(value: str, limit: int = 60) -> str:
    # Quoted in an error message: a caller's 10 MB string must not become a 10 MB message.
    return repr(value) if len(value) <= limit else f"{value[:limit]!r}… ({len(value)} characters)"


@dataclass(frozen=True)
class Job:
    """One ingestion job for :meth:`Producer.enqueue_many`; its ``job_id`` is fixed when it is created.

    Keeping the object (or its ``job_id``) lets a caller enqueue it again after a :class:`BrokerError` without
    risking a duplicate: a worker treats a job id it finished as done. Build one with :meth:`upsert` or
    :meth:`delete`. It is validated when enqueued, not when created.
    """

    collection: str
    document_id: str
    #: The document's text; required for an upsert, ignored by the worker for a delete.
    text: str | None = None
    #: A JSON object stored beside the document.
    metadata: Mapping[str, Any] | None = None
    #: ``"upsert"`` (insert or replace every chunk of the document) or ``"delete"``.
    op: str = "upsert"
    job_id: str = field(default_factory=lambda: new_job_id())

    @classmethod
    def upsert(
        cls,
        collection: str,
        document_id: str,
        text: str,
        *,
        metadata: Mapping[str, Any] | None = None,
        job_id: str | None = None,
    ) -> Job:
        """A job inserting the document, or replacing all of its chunks atomically."""
        return cls(collection, document_id, text, metadata, "upsert", job_id if job_id is not None else new_job_id())

    @classmethod
    def delete(cls, collection: str, document_id: str, *, job_id: str | None = None) -> Job:
        """A job removing the document and all of its chunks."""
        return cls(collection, document_id, None, None, "delete", job_id if job_id is not None else new_job_id())

    def to_body(self) -> dict[str, Any]:
        """The job as a contract body (what :func:`validate_job` checks and the worker reads)."""
        text = _ABSENT if self.text is None else self.text
        return _body(self.job_id, self.collection, self.document_id, text, self.metadata, self.op)


class _Absent:
    """A field the caller did not give (as opposed to one given as ``None``, which JSON spells null)."""


_ABSENT: Any = _Absent()


def _body(job_id: Any, collection: Any, document_id: Any, text: Any, metadata: Any, op: Any) -> dict[str, Any]:
    # The field order and shape of the Rust producer's bodies: `text` always there ("" for a delete without one),
    # `metadata` only when set, `op` always. Absent fields stay absent so the error says "missing".
    fields = {"job_id": job_id, "collection": collection, "document_id": document_id}
    body: dict[str, Any] = {name: value for name, value in fields.items() if value is not _ABSENT}
    if text is not _ABSENT:
        body["text"] = text
    elif op == "delete":
        body["text"] = ""
    if metadata is not None and metadata is not _ABSENT:
        body["metadata"] = metadata
    body["op"] = op
    return body


def upsert_body(collection: Any, document_id: Any, text: Any, metadata: Any, job_id: str | None) -> dict[str, Any]:
    """The validated body of an upsert built from a caller's arguments."""
    body = _body(job_id if job_id is not None else new_job_id(), collection, document_id, text, metadata, "upsert")
    validate_job(body)
    return body


def delete_body(collection: Any, document_id: Any, job_id: str | None) -> dict[str, Any]:
    """The validated body of a delete built from a caller's arguments."""
    body = _body(job_id if job_id is not None else new_job_id(), collection, document_id, _ABSENT, None, "delete")
    validate_job(body)
    return body


def batch_bodies(jobs: Any) -> list[dict[str, Any]]:
    """The validated bodies of an ``enqueue_many`` batch: :class:`Job` objects or mappings of the job fields.

    A mapping without ``job_id`` gets a fresh one. Unknown keys are refused (a misspelt ``metdata`` would
    otherwise be dropped without a word). Raises :class:`InvalidJob` naming the job's index and the field.
    """
    if isinstance(jobs, (str, bytes, Mapping)) or not hasattr(jobs, "__iter__"):
        raise InvalidJob(None, f"enqueue_many takes an iterable of jobs, got {type(jobs).__name__}")
    bodies = []
    for index, job in enumerate(jobs):
        try:
            bodies.append(_batch_body(job))
        except InvalidJob as error:
            raise error.at_index(index) from None
    return bodies


def _batch_body(job: Any) -> dict[str, Any]:
    if isinstance(job, Job):
        body = job.to_body()
    elif isinstance(job, Mapping):
        unknown = [key for key in job if key not in _FIELDS]
        if unknown:
            raise InvalidJob(str(unknown[0]), f"unknown field; a job has the fields {', '.join(_FIELDS)}")
        body = _body(
            job["job_id"] if "job_id" in job else new_job_id(),
            job.get("collection", _ABSENT),
            job.get("document_id", _ABSENT),
            job.get("text", _ABSENT),
            job.get("metadata", _ABSENT),
            job.get("op", "upsert"),
        )
    else:
        raise InvalidJob(None, f"a job must be a Job or a mapping of its fields, got {_json_type(job)}")
    validate_job(body)
    return body


def encode_body(body: Mapping[str, Any]) -> bytes:
    """The message body: compact JSON in UTF-8, as the Rust producer writes it."""
    return _encode(body).encode("utf-8")


def _encode(value: Any) -> str:
    # allow_nan=False: NaN and Infinity are not JSON, and the worker would dead-letter the body.
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


# UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then 74 random bits. Within one millisecond the random part
# is incremented (RFC 9562, method 3) so that ids made by one process are strictly increasing: the worker orders
# two jobs for the same document by their ids, so an upsert and then a delete made in the same millisecond must
# not be reordered.
_RANDOM_BITS = 74
_id_lock = threading.Lock()
_last_ms = 0
_last_random = 0


def new_job_id() -> str:
    """A fresh job id: a UUIDv7 string, time-ordered and strictly increasing within the process."""
    global _last_ms, _last_random
    now_ms = time.time_ns() // 1_000_000
    with _id_lock:
        if now_ms > _last_ms:
            ms, random_part = now_ms, secrets.randbits(_RANDOM_BITS)
        else:
            # Same millisecond, or the clock stepped back: keep the last time and count up.
            ms, random_part = _last_ms, _last_random + 1
            if random_part >> _RANDOM_BITS:
                ms, random_part = ms + 1, secrets.randbits(_RANDOM_BITS)
        _last_ms, _last_random = ms, random_part
    rand_a = random_part >> 62
    rand_b = random_part & ((1 << 62) - 1)
    value = (ms << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
    return str(uuid.UUID(int=value))


def _reset_job_ids_after_fork() -> None:
    # A forked child inherits the parent's counter: counting up from it in the same millisecond would give both
    # processes the same ids, and the worker would take the second job for one it already finished. Forget it so
    # the child draws fresh random bits; a new lock, because another thread may have held this one at the fork.
    global _id_lock, _last_ms, _last_random
    _id_lock = threading.Lock()
    _last_ms, _last_random = 0, 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_job_ids_after_fork)
