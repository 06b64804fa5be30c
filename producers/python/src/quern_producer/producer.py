"""The blocking producer: :class:`Producer`, for WSGI apps (Django, Flask) and scripts.

It drives pika's ``SelectConnection`` in the calling thread, polling its I/O loop only while a call waits for
the broker, and serializes callers with a lock: one producer can be shared by every thread of a process.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Callable

import pika.connection
import pika.exceptions
from pika.adapters.select_connection import IOLoop, SelectConnection

from ._session import CLOSE_TIMEOUT, Message, Session, connection_parameters, redact_url
from .cutover import Cutover, CutoverSetting, LegacyDelete, LegacyEnqueue
from .contract import Job, batch_bodies, delete_body, encode_body, upsert_body
from .errors import BrokerError, QuernError
from .topology import DEFAULT_PREFIX, Topology
from .tracing import caller_traceparent

#: Default time to wait for the broker's confirm of a call's jobs, in seconds (the Rust producer's too).
DEFAULT_CONFIRM_TIMEOUT = 30.0


class _BlockingSession(Session):
    """A session on its own pika ``IOLoop``, which runs only inside :meth:`run_until`."""

    def __init__(self, parameters: pika.connection.Parameters, topology: Topology) -> None:
        self.ioloop = IOLoop()
        self.ioloop.activate_poller()

        def connect(**kwargs: Any) -> SelectConnection:
            return SelectConnection(custom_ioloop=self.ioloop, **kwargs)

        super().__init__(parameters, topology, connect)

    def run_until(self, done: Callable[[], bool], timeout: float) -> bool:
        """Processes I/O until ``done()`` is true (returns True) or ``timeout`` seconds pass (returns False)."""
        deadline = time.monotonic() + timeout
        # A timer at the deadline bounds each poll's sleep; the loop checks `done` after every I/O event.
        timer = self.ioloop.call_later(timeout, _nothing)
        try:
            while not done():
                if time.monotonic() >= deadline:
                    return False
                self.ioloop.poll()
                self.ioloop.process_timeouts()
            return True
        finally:
            self.ioloop.remove_timeout(timer)

    def poll_now(self) -> None:
        """Handles whatever arrived while nobody was polling (a close from the broker, the end of a dead stream,
        heartbeats) without waiting for more."""
        timer = self.ioloop.call_later(0, _nothing)
        try:
            self.ioloop.poll()
            self.ioloop.process_timeouts()
        finally:
            self.ioloop.remove_timeout(timer)

    def close(self) -> None:
        """Closes the connection (briefly waiting for the broker's reply) and releases the I/O loop."""
        try:
            self.begin_close()
            self.run_until(lambda: self.connection.is_closed, CLOSE_TIMEOUT)
        except Exception:  # noqa: BLE001 - closing a broken session must not raise
            pass
        finally:
            self.ioloop.close()


def _nothing() -> None:
    pass


class Producer(CutoverSetting):
    """Publishes Quern ingestion jobs to RabbitMQ and returns once the broker has confirmed them.

    ``Producer(amqp_url)`` connects, declares the topology (idempotently, with the worker's exact arguments) and
    turns on publisher confirms; it raises :class:`BrokerError` when the broker cannot be reached. Every method
    validates its jobs first (raising :class:`InvalidJob`, a ``ValueError``, before anything is sent), publishes
    them persistent and ``mandatory``, and raises :class:`BrokerError` on a nack, a returned (unroutable) message,
    a lost connection or no confirm within ``confirm_timeout`` seconds. After a lost connection the next call
    reconnects.

    Thread safety: a producer may be shared by any number of threads (e.g. Django or Flask under a threaded
    gunicorn); a lock serializes the calls, since pika's connections are not thread safe. A call holds the lock
    for one confirm round trip, so threads that enqueue at once wait for each other: batch with
    :meth:`enqueue_many` where throughput matters. After ``os.fork()`` the child reconnects on its first call
    (it never touches the parent's connection), so a producer created before gunicorn forks its workers is safe.
    """

    def __init__(
        self,
        amqp_url: str,
        *,
        queue_prefix: str = DEFAULT_PREFIX,
        confirm_timeout: float = DEFAULT_CONFIRM_TIMEOUT,
        connection_name: str = "quern-producer",
        cutover_percent: float = 100,
        legacy: LegacyEnqueue | None = None,
        legacy_delete: LegacyDelete | None = None,
    ) -> None:
        self._cutover = Cutover(cutover_percent, legacy, legacy_delete)
        self._topology = Topology(queue_prefix)
        self._confirm_timeout = _positive("confirm_timeout", confirm_timeout)
        self._parameters = connection_parameters(amqp_url, connection_name, self._confirm_timeout)
        self._url = redact_url(amqp_url)
        # pika gives up on its own after `stack_timeout` (15 s by default); declaring the topology is quick.
        self._open_timeout = float(self._parameters.stack_timeout or 15.0) + self._confirm_timeout
        self._lock = threading.Lock()
        self._session: _BlockingSession | None = None
        self._closed = False
        _producers.add(self)
        with self._lock:
            self._session = self._open(())

    @property
    def topology(self) -> Topology:
        """The exchange and queue names this producer publishes to."""
        return self._topology

    def enqueue(
        self,
        collection: str,
        document_id: str,
        text: str,
        *,
        metadata: Mapping[str, Any] | None = None,
        job_id: str | None = None,
    ) -> Any:
        """Enqueues an upsert of the document (insert, or replace all its chunks); returns the job id.

        ``job_id`` (a hyphenated UUID) is for sending a job again after a :class:`BrokerError`; by default a
        fresh UUIDv7 is made. With ``cutover_percent`` below 100, a document on the legacy side is not published:
        ``legacy(collection, document_id, text, metadata)`` is called instead and its result returned.
        """
        return self._route([upsert_body(collection, document_id, text, metadata, job_id)])[0]

    def delete(self, collection: str, document_id: str, *, job_id: str | None = None) -> Any:
        """Enqueues the deletion of the document and its chunks; returns the job id (or, for a document on the
        legacy side, what ``legacy_delete`` returned)."""
        return self._route([delete_body(collection, document_id, job_id)])[0]

    def enqueue_many(self, jobs: Iterable[Job | Mapping[str, Any]]) -> list[Any]:
        """Enqueues several jobs with one confirm round trip; returns their ids in order.

        Each job is a :class:`Job` or a mapping with the keys ``collection``, ``document_id``, ``text``, and
        optionally ``metadata``, ``op`` (``"upsert"`` or ``"delete"``) and ``job_id``. All are validated before
        any is published. On a :class:`BrokerError` some may be enqueued already; its ``job_ids`` can be sent
        again safely (pass :class:`Job` objects or mappings with ``job_id`` to keep the same ids).
        """
        bodies = batch_bodies(jobs)
        if not bodies:
            return []
        return self._route(bodies)

    def close(self) -> None:
        """Closes the connection; later calls raise :class:`QuernError`. Idempotent."""
        with self._lock:
            self._closed = True
            self._discard()

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Producer({self._url!r}, queue_prefix={self._topology.prefix!r})"

    def _route(self, bodies: Sequence[Mapping[str, Any]]) -> list[Any]:
        """Publishes the Quern share of ``bodies`` (one confirm round trip), then hands the rest to the legacy
        path; results in the order of ``bodies``. Every body was validated, and every route checked, first."""
        routes = self._cutover.routes(bodies)
        quern = [body for body, to_quern in zip(bodies, routes) if to_quern]
        job_ids = iter(self._publish(quern) if quern else [])
        return [next(job_ids) if to_quern else self._cutover.hand_over(body) for body, to_quern in zip(bodies, routes)]

    def _publish(self, bodies: Sequence[Mapping[str, Any]]) -> list[str]:
        messages: list[Message] = [(body["job_id"], encode_body(body)) for body in bodies]
        job_ids = [job_id for job_id, _ in messages]
        traceparent = caller_traceparent()
        with self._lock:
            if self._closed:
                raise QuernError("the producer is closed")
            session = self._live_session(job_ids)
            try:
                batch = session.publish(messages, traceparent)
            except pika.exceptions.AMQPError as error:
                self._discard()
                raise BrokerError(f"publishing to RabbitMQ failed: {error!r}", job_ids=job_ids) from error
            if not session.run_until(lambda: batch.settled, self._confirm_timeout):
                self._discard()
                raise BrokerError(
                    f"no confirm from RabbitMQ within {self._confirm_timeout:g} s for {batch.unconfirmed} of "
                    f"{len(job_ids)} jobs; they may or may not be enqueued",
                    job_ids=job_ids,
                )
            problem = batch.problem(self._topology)
            if problem is not None:
                if not session.usable:
                    self._discard()
                reason, failed = problem
                raise BrokerError(reason, job_ids=failed)
        return job_ids

    def _live_session(self, job_ids: Sequence[str]) -> _BlockingSession:
        """The open session, or a new one when it was lost (nothing has been published yet: reconnecting here
        loses no job)."""
        session = self._session
        if session is not None and session.pid != os.getpid():
            # Inherited through fork: the socket is the parent's. Forget it without a word on the wire.
            self._session = session = None
        if session is not None:
            session.poll_now()
            if not session.usable:
                self._discard()
                session = None
        if session is None:
            session = self._session = self._open(job_ids)
        return session

    def _open(self, job_ids: Sequence[str]) -> _BlockingSession:
        session = _BlockingSession(self._parameters, self._topology)
        try:
            session.run_until(lambda: session.ready or session.error is not None, self._open_timeout)
        except BaseException:
            # Interrupted (e.g. KeyboardInterrupt): do not leave a connection behind that nothing will close.
            session.close()
            raise
        if session.ready and session.error is None:
            return session
        reason = session.error or f"no answer from RabbitMQ within {self._open_timeout:g} s"
        session.close()
        raise BrokerError(reason, job_ids=job_ids)

    def _discard(self) -> None:
        session, self._session = self._session, None
        if session is not None and session.pid == os.getpid():
            session.close()

    def _forget_after_fork(self) -> None:
        # In a forked child: another thread may have held the lock at the fork, and the session is the parent's.
        self._lock = threading.Lock()
        self._session = None


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


_producers: weakref.WeakSet[Producer] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for producer in list(_producers):
        producer._forget_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
