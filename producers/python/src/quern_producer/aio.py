"""The asyncio producer: :class:`AsyncProducer`, for ASGI apps (FastAPI, Starlette, Django's async views).

It runs pika's ``AsyncioConnection`` on the running event loop; the methods are those of :class:`Producer`, as
coroutines. Concurrent calls (``asyncio.gather`` of several enqueues) are serialized by an ``asyncio.Lock``.
"""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Callable

import pika.connection
import pika.exceptions
from pika.adapters.asyncio_connection import AsyncioConnection

from ._session import CLOSE_TIMEOUT, Message, Session, connection_parameters, redact_url
from .cutover import Cutover, CutoverSetting, LegacyDelete, LegacyEnqueue
from .contract import Job, batch_bodies, delete_body, encode_body, upsert_body
from .errors import BrokerError, QuernError
from .producer import DEFAULT_CONFIRM_TIMEOUT, _positive
from .topology import DEFAULT_PREFIX, Topology
from .tracing import caller_traceparent


class _AsyncioSession(Session):
    """A session on one event loop; :meth:`wait_until` awaits what the callbacks report."""

    def __init__(
        self, parameters: pika.connection.Parameters, topology: Topology, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.loop = loop
        self._waiters: list[asyncio.Future[None]] = []

        def connect(**kwargs: Any) -> AsyncioConnection:
            return AsyncioConnection(custom_ioloop=loop, **kwargs)

        super().__init__(parameters, topology, connect)

    def _notify(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait_until(self, done: Callable[[], bool], timeout: float) -> bool:
        """Waits until ``done()`` is true (returns True) or ``timeout`` seconds pass (returns False)."""
        deadline = self.loop.time() + timeout
        while not done():
            remaining = deadline - self.loop.time()
            if remaining <= 0:
                return False
            waiter: asyncio.Future[None] = self.loop.create_future()
            self._waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, remaining)
            except asyncio.TimeoutError:
                return done()
        return True

    async def close(self) -> None:
        """Closes the connection, briefly waiting for the broker's reply."""
        self.begin_close()
        try:
            await self.wait_until(lambda: self.connection.is_closed, CLOSE_TIMEOUT)
        except Exception:  # noqa: BLE001 - closing a broken session must not raise
            pass


class AsyncProducer(CutoverSetting):
    """The asyncio twin of :class:`Producer`: same checks, same guarantees, coroutine methods.

    Creating one does no I/O; it connects on ``await producer.connect()``, on entering ``async with``, or on
    its first call, and raises :class:`BrokerError` when the broker cannot be reached. Then, as
    :class:`Producer`: validation first (:class:`InvalidJob`, a ``ValueError``), persistent ``mandatory``
    publishes, and a :class:`BrokerError` on a nack, a return, a lost connection or a missing confirm; the next
    call after a lost connection reconnects.

    Concurrency: use a producer from one event loop at a time (one per loop, e.g. created in the app's
    lifespan); concurrent tasks may share it, their calls take turns. It is not for use from several threads.
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
        self._open_timeout = float(self._parameters.stack_timeout or 15.0) + self._confirm_timeout
        self._session: _AsyncioSession | None = None
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    @property
    def topology(self) -> Topology:
        """The exchange and queue names this producer publishes to."""
        return self._topology

    async def connect(self) -> None:
        """Connects and declares the topology now rather than on the first call; idempotent."""
        async with self._guard():
            await self._live_session(())

    async def enqueue(
        self,
        collection: str,
        document_id: str,
        text: str,
        *,
        metadata: Mapping[str, Any] | None = None,
        job_id: str | None = None,
    ) -> Any:
        """Enqueues an upsert of the document; returns the job id, or what ``legacy`` returned for a document on
        the legacy side (see :meth:`Producer.enqueue`)."""
        return (await self._route([upsert_body(collection, document_id, text, metadata, job_id)]))[0]

    async def delete(self, collection: str, document_id: str, *, job_id: str | None = None) -> Any:
        """Enqueues the deletion of the document and its chunks; returns the job id (or what ``legacy_delete``
        returned)."""
        return (await self._route([delete_body(collection, document_id, job_id)]))[0]

    async def enqueue_many(self, jobs: Iterable[Job | Mapping[str, Any]]) -> list[Any]:
        """Enqueues several jobs with one confirm round trip (see :meth:`Producer.enqueue_many`)."""
        bodies = batch_bodies(jobs)
        if not bodies:
            return []
        return await self._route(bodies)

    async def close(self) -> None:
        """Closes the connection; later calls raise :class:`QuernError`. Idempotent."""
        async with self._guard():
            self._closed = True
            await self._discard()

    async def __aenter__(self) -> AsyncProducer:
        await self.connect()
        return self

    async def __aexit__(self, *_exc: Any) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncProducer({self._url!r}, queue_prefix={self._topology.prefix!r})"

    def _guard(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            # An asyncio.Lock belongs to one loop. A new loop (e.g. a test's, or asyncio.run called again) gets a
            # new lock, and the old loop's session is forgotten in _live_session.
            self._lock, self._lock_loop = asyncio.Lock(), loop
        return self._lock

    async def _route(self, bodies: Sequence[Mapping[str, Any]]) -> list[Any]:
        """Publishes the Quern share of ``bodies`` (one confirm round trip), then hands the rest to the legacy
        path (awaiting what it returns when that is awaitable); results in the order of ``bodies``."""
        routes = self._cutover.routes(bodies)
        quern = [body for body, to_quern in zip(bodies, routes) if to_quern]
        job_ids = iter(await self._publish(quern) if quern else [])
        results: list[Any] = []
        for body, to_quern in zip(bodies, routes):
            if to_quern:
                results.append(next(job_ids))
                continue
            result = self._cutover.hand_over(body)
            results.append(await result if inspect.isawaitable(result) else result)
        return results

    async def _publish(self, bodies: Sequence[Mapping[str, Any]]) -> list[str]:
        messages: list[Message] = [(body["job_id"], encode_body(body)) for body in bodies]
        job_ids = [job_id for job_id, _ in messages]
        traceparent = caller_traceparent()
        async with self._guard():
            session = await self._live_session(job_ids)
            try:
                batch = session.publish(messages, traceparent)
            except pika.exceptions.AMQPError as error:
                await self._discard()
                raise BrokerError(f"publishing to RabbitMQ failed: {error!r}", job_ids=job_ids) from error
            if not await session.wait_until(lambda: batch.settled, self._confirm_timeout):
                await self._discard()
                raise BrokerError(
                    f"no confirm from RabbitMQ within {self._confirm_timeout:g} s for {batch.unconfirmed} of "
                    f"{len(job_ids)} jobs; they may or may not be enqueued",
                    job_ids=job_ids,
                )
            problem = batch.problem(self._topology)
            if problem is not None:
                if not session.usable:
                    await self._discard()
                reason, failed = problem
                raise BrokerError(reason, job_ids=failed)
        return job_ids

    async def _live_session(self, job_ids: Sequence[str]) -> _AsyncioSession:
        if self._closed:
            raise QuernError("the producer is closed")
        loop = asyncio.get_running_loop()
        session = self._session
        if session is not None and (session.loop is not loop or session.pid != os.getpid()):
            # Another loop's (or, after fork, the parent's) connection: it cannot be used or closed from here.
            self._session = session = None
        if session is not None and not session.usable:
            await self._discard()
            session = None
        if session is None:
            session = _AsyncioSession(self._parameters, self._topology, loop)
            try:
                await session.wait_until(lambda: session.ready or session.error is not None, self._open_timeout)
            except BaseException:
                # Cancelled while connecting: do not leave a connection behind that nothing will close.
                session.begin_close()
                raise
            if not (session.ready and session.error is None):
                reason = session.error or f"no answer from RabbitMQ within {self._open_timeout:g} s"
                await session.close()
                raise BrokerError(reason, job_ids=job_ids)
            self._session = session
        return session

    async def _discard(self) -> None:
        session, self._session = self._session, None
        if session is not None and session.loop is asyncio.get_running_loop() and session.pid == os.getpid():
            await session.close()
