"""One AMQP session of a producer: a connection, one channel in confirm mode, the topology declared, and the
bookkeeping of publisher confirms. Shared by the blocking and the asyncio producer.

Everything here is driven by pika's callbacks and never blocks, so the same code runs on pika's
``SelectConnection`` (the blocking producer polls its I/O loop until what it waits for has happened) and on
``AsyncioConnection`` (the asyncio producer awaits it). Publishes are written back to back and their confirms
counted as they come: a batch costs one confirm round trip, not one per job.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Sequence
from typing import Any, Callable
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import pika
import pika.channel
import pika.connection
import pika.exceptions
import pika.frame
import pika.spec

from ._tls import describe_tls_error, split_tls_parameters, ssl_options
from .contract import CONTRACT_VERSION
from .topology import INGEST_ROUTING_KEY, Topology, declare
from .tracing import TRACEPARENT_HEADER, new_root_traceparent

try:
    # pika's marker for a 64-bit integer in a field table: the Rust producer writes `quern-contract` as a
    # LongLongInt, and a plain int would go out as a 32-bit one.
    from pika.compat import long as _int64
except ImportError:  # pragma: no cover - every pika 1.x has it
    _int64 = int

#: The header naming the contract version of the body (``crates/quern-queue/src/headers.rs``).
CONTRACT_HEADER = "quern-contract"
#: ``app_id`` of every message, as the Rust producer sets it.
APP_ID = "quern-producer"
#: How long closing a broken session may take before it is abandoned.
CLOSE_TIMEOUT = 2.0

Message = tuple[str, bytes]
"""A job id and its encoded body."""


def connection_parameters(amqp_url: str, connection_name: str, confirm_timeout: float) -> pika.URLParameters:
    """pika's parameters for ``amqp_url``; a ``ValueError`` (password left out) when it is not an AMQP URL."""
    if not isinstance(amqp_url, str) or not amqp_url.startswith(("amqp://", "amqps://")):
        shown = redact_url(amqp_url) if isinstance(amqp_url, str) and "://" in amqp_url else "(not shown)"
        raise ValueError(
            f"amqp_url must be an amqp:// or amqps:// URL (amqp://user:password@host:port/vhost), got {shown}"
        )
    # RabbitMQ's TLS parameters (cacertfile, ...) are not pika's: taken out here, made into its SSL options.
    pika_url, tls = split_tls_parameters(amqp_url)
    try:
        parameters = pika.URLParameters(pika_url)
    except Exception as error:
        reason = str(error)
        # pika's messages may quote parts of the URL: keep a password out of them.
        password = urlsplit(amqp_url).password
        if password and password in reason:
            reason = "invalid URL"
        raise ValueError(f"amqp_url {redact_url(amqp_url)} is not a valid AMQP URL: {reason}") from None
    if tls:
        parameters.ssl_options = ssl_options(tls)
    properties = dict(parameters.client_properties or {})
    # The name shown for the connection in RabbitMQ's management UI and `rabbitmqctl list_connections`.
    properties.setdefault("connection_name", connection_name)
    parameters.client_properties = properties
    if parameters.blocked_connection_timeout is None:
        # A broker short of memory or disk blocks publishers; give up as a missing confirm would, not never.
        parameters.blocked_connection_timeout = confirm_timeout
    return parameters


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, for messages and logs."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port is not None else ""
        user = quote(unquote(parts.username or ""), safe="")
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))
    except ValueError:
        return "(an unparsable URL, not shown)"


def describe_target(parameters: pika.connection.Parameters) -> str:
    """Where a session connects, for error messages: host, port and virtual host, never credentials."""
    return f"{parameters.host}:{parameters.port} (vhost {parameters.virtual_host})"


def describe_connect_error(error: BaseException, tls: bool = False) -> str:
    """A one-line reason for a failed connection attempt, from pika's nested exceptions; ``tls`` when the
    connection was an ``amqps://`` one."""
    if isinstance(error, pika.exceptions.ProbableAuthenticationError):
        return "login refused (check the user and password of the URL)"
    if isinstance(error, pika.exceptions.ProbableAccessDeniedError):
        return "access to the virtual host refused (does it exist, and may this user use it?)"
    cause: BaseException = error
    # pika wraps the socket's own error two or three levels deep.
    for _ in range(6):
        if isinstance(cause, pika.exceptions.AMQPConnectionError) and cause.args:
            if isinstance(cause.args[0], BaseException):
                cause = cause.args[0]
                continue
        nested = getattr(cause, "exceptions", None)
        if isinstance(nested, (list, tuple)) and nested and isinstance(nested[-1], BaseException):
            cause = nested[-1]
            continue
        inner = getattr(cause, "exception", None)
        if isinstance(inner, BaseException):
            cause = inner
            continue
        break
    tls_failure = describe_tls_error(cause, tls)
    if tls_failure is not None:
        return tls_failure
    if isinstance(cause, socket.gaierror):
        return f"cannot resolve the host name ({cause.strerror})"
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror[:1].lower() + cause.strerror[1:]
    if isinstance(cause, (socket.timeout, TimeoutError)):
        return "timed out"
    return describe_error(cause)


def describe_error(error: BaseException | None) -> str:
    """A one-line description of a pika exception (reply code and text for a close by the broker)."""
    if error is None:
        return "closed"
    if isinstance(error, (pika.exceptions.ConnectionClosed, pika.exceptions.ChannelClosed)):
        return f"{error.reply_code} {error.reply_text}"
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def message_properties(job_id: str, traceparent: str, timestamp: int) -> pika.BasicProperties:
    """The properties the Rust producer sets: JSON, persistent, the job id as message id, and our headers."""
    return pika.BasicProperties(
        content_type="application/json",
        delivery_mode=2,
        message_id=job_id,
        timestamp=timestamp,
        app_id=APP_ID,
        headers={CONTRACT_HEADER: _int64(CONTRACT_VERSION), TRACEPARENT_HEADER: traceparent},
    )


class Batch:
    """The publishes of one call, settled once the broker has confirmed (acked or nacked) each of them, or once
    the session failed."""

    def __init__(self, job_ids: Sequence[str], on_settled: Callable[[], None]) -> None:
        self.job_ids: list[str] = list(job_ids)
        self.unconfirmed = 0
        self.nacked: list[str] = []
        self.returned: list[tuple[str, str]] = []
        #: Why the session failed before every confirm arrived.
        self.error: str | None = None
        self._on_settled = on_settled

    @property
    def settled(self) -> bool:
        return self.error is not None or self.unconfirmed == 0

    def confirm(self, job_id: str, nacked: bool, returned: str | None) -> None:
        self.unconfirmed -= 1
        if nacked:
            self.nacked.append(job_id)
        if returned is not None:
            self.returned.append((job_id, returned))
        if self.unconfirmed == 0:
            self._on_settled()

    def fail(self, reason: str) -> None:
        if self.error is None:
            self.error = reason
            self._on_settled()

    def problem(self, topology: Topology) -> tuple[str, list[str]] | None:
        """What went wrong, and the jobs it concerns; ``None`` when every job was confirmed."""
        if self.error is not None:
            return self.error, self.job_ids
        if not self.nacked and not self.returned:
            return None
        problems = []
        if self.returned:
            job_id, reason = self.returned[0]
            problems.append(
                f"{len(self.returned)} returned as unroutable ({reason}; first: job {job_id}): is queue "
                f"`{topology.ingest_queue}` still bound to exchange `{topology.work_exchange}`?"
            )
        if self.nacked:
            problems.append(
                f"{len(self.nacked)} refused by the broker (nack; first: job {self.nacked[0]}): a full queue "
                "refuses publishes (x-overflow reject-publish)"
            )
        failed = set(self.nacked) | {job_id for job_id, _ in self.returned}
        job_ids = [job_id for job_id in self.job_ids if job_id in failed]
        return f"{len(job_ids)} of {len(self.job_ids)} jobs not enqueued: {'; '.join(problems)}", job_ids


class Confirms:
    """Publisher-confirm bookkeeping of one channel: delivery tag to (batch, job id), and returned messages.

    The broker numbers the messages of a channel in confirm mode 1, 2, 3, …; an ack or nack names one tag, or
    with ``multiple`` every tag up to it. A returned (unroutable) message comes back before its ack.
    """

    def __init__(self) -> None:
        self._last_tag = 0
        # Insertion order is tag order, which lets a `multiple` ack stop at the first higher tag.
        self._pending: dict[int, tuple[Batch, str]] = {}
        self._returned: dict[str, list[str]] = {}

    def track(self, batch: Batch, job_id: str) -> None:
        """Records a publish just written to the channel."""
        self._last_tag += 1
        self._pending[self._last_tag] = (batch, job_id)
        batch.unconfirmed += 1

    def on_ack_nack(self, frame: pika.frame.Method) -> None:
        method = frame.method
        nacked = isinstance(method, pika.spec.Basic.Nack)
        if method.multiple:
            tags = []
            for tag in self._pending:
                if tag > method.delivery_tag:
                    break
                tags.append(tag)
        else:
            tags = [method.delivery_tag]
        for tag in tags:
            entry = self._pending.pop(tag, None)
            if entry is None:
                continue
            batch, job_id = entry
            returns = self._returned.get(job_id)
            returned = returns.pop(0) if returns else None
            if returns is not None and not returns:
                del self._returned[job_id]
            batch.confirm(job_id, nacked, returned)

    def on_return(
        self, _channel: Any, method: pika.spec.Basic.Return, properties: pika.BasicProperties, _body: bytes
    ) -> None:
        if properties.message_id:
            reason = f"{method.reply_code} {method.reply_text}"
            self._returned.setdefault(properties.message_id, []).append(reason)

    def fail_all(self, reason: str) -> None:
        """Settles every batch still waiting: their confirms will never come."""
        batches = {id(batch): batch for batch, _ in self._pending.values()}
        self._pending.clear()
        self._returned.clear()
        for batch in batches.values():
            batch.fail(reason)


class Session:
    """A connection and its confirm-mode channel with the topology declared; usable once ``ready``.

    Subclasses give the connection class (through ``connect``) and how to wait; ``_notify`` is called whenever
    something a waiter may wait for has happened (ready, failed, a batch settled).
    """

    def __init__(
        self,
        parameters: pika.connection.Parameters,
        topology: Topology,
        connect: Callable[..., pika.connection.Connection],
    ) -> None:
        self.topology = topology
        #: The process that opened the session: a forked child must not use its parent's socket.
        self.pid = os.getpid()
        self.ready = False
        #: Why the session is unusable, once it is.
        self.error: str | None = None
        self.channel: pika.channel.Channel | None = None
        self._target = describe_target(parameters)
        self._tls = parameters.ssl_options is not None
        self._confirms = Confirms()
        self.connection = connect(
            parameters=parameters,
            on_open_callback=self._on_connection_open,
            on_open_error_callback=self._on_connection_open_error,
            on_close_callback=self._on_connection_closed,
        )

    @property
    def usable(self) -> bool:
        return (
            self.ready
            and self.error is None
            and self.connection.is_open
            and self.channel is not None
            and self.channel.is_open
        )

    def publish(self, messages: Sequence[Message], traceparent: str | None) -> Batch:
        """Writes every message to the channel (mandatory, persistent) and returns the batch to wait for.

        ``traceparent`` is the caller's trace; without one each job starts a trace of its own.
        Raises ``pika.exceptions.AMQPError`` when the channel is no longer open.
        """
        assert self.channel is not None
        batch = Batch([job_id for job_id, _ in messages], self._notify)
        timestamp = int(time.time())
        for job_id, body in messages:
            properties = message_properties(job_id, traceparent or new_root_traceparent(), timestamp)
            self.channel.basic_publish(
                self.topology.work_exchange, INGEST_ROUTING_KEY, body, properties, mandatory=True
            )
            self._confirms.track(batch, job_id)
        return batch

    def begin_close(self) -> None:
        """Starts closing the connection (the broker's reply completes it); never raises."""
        try:
            if not (self.connection.is_closed or self.connection.is_closing):
                self.connection.close()
        except Exception:  # noqa: BLE001 - a session being thrown away must not raise on the way out
            pass

    def fail(self, reason: str) -> None:
        """Marks the session unusable and settles every batch still waiting."""
        if self.error is None:
            self.error = reason
        self._confirms.fail_all(reason)
        self._notify()

    def _notify(self) -> None:
        """Something changed; the asyncio session wakes its waiters, the blocking one needs nothing."""

    def _on_connection_open(self, connection: pika.connection.Connection) -> None:
        connection.channel(on_open_callback=self._on_channel_open)

    def _on_channel_open(self, channel: pika.channel.Channel) -> None:
        self.channel = channel
        channel.add_on_close_callback(self._on_channel_closed)
        channel.add_on_return_callback(self._confirms.on_return)
        declare(channel, self.topology, self._on_declared)

    def _on_declared(self) -> None:
        assert self.channel is not None
        self.channel.confirm_delivery(ack_nack_callback=self._confirms.on_ack_nack, callback=self._on_confirm_mode)

    def _on_confirm_mode(self, _frame: Any) -> None:
        self.ready = True
        self._notify()

    def _on_connection_open_error(self, _connection: Any, error: BaseException) -> None:
        self.fail(f"cannot connect to RabbitMQ at {self._target}: {describe_connect_error(error, self._tls)}")

    def _on_connection_closed(self, _connection: Any, error: BaseException) -> None:
        self.fail(f"the connection to RabbitMQ at {self._target} was lost: {describe_error(error)}")

    def _on_channel_closed(self, _channel: Any, error: BaseException) -> None:
        if isinstance(error, pika.exceptions.ChannelClosedByBroker):
            if self.ready:
                reason = f"RabbitMQ closed the channel: {describe_error(error)}"
            else:
                reason = (
                    f"RabbitMQ refused to declare the exchanges and queues of prefix `{self.topology.prefix}`: "
                    f"{describe_error(error)}"
                )
        else:
            reason = f"the connection to RabbitMQ at {self._target} was lost: {describe_error(error)}"
        self.fail(reason)
