"""Quern's exchange and queue names, and their declaration: the same as the Rust worker's, byte for byte.

A queue's arguments can never change once it exists: a redeclare with any other argument (added, removed, of
another value or integer width) fails with ``PRECONDITION_FAILED`` and closes the channel. So the tables here
are copies of ``crates/quern-queue/src/topology.rs`` (``ingest_queue_arguments``, ``dead_queue_arguments``),
keys in the order lapin writes them (sorted) and ``x-delivery-limit`` a 32-bit signed integer as there; the
tests check the encoded bytes, and that the worker and this package can declare in either order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

import pika.channel

#: Default prefix of every exchange and queue name.
DEFAULT_PREFIX = "quern"
#: Routing key of ingestion jobs on the work exchange.
INGEST_ROUTING_KEY = "ingest"
#: Deliveries after which the broker itself dead-letters a message (the worker's ``QueueArguments`` default).
DELIVERY_LIMIT = 20

_PREFIX_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,200}")


@dataclass(frozen=True)
class Topology:
    """Names of the exchanges and queues of one Quern deployment, all derived from one prefix."""

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        if not isinstance(self.prefix, str) or not _PREFIX_PATTERN.fullmatch(self.prefix):
            raise ValueError(
                f"queue_prefix {self.prefix!r} must be 1 to 200 characters of ASCII letters, digits, '.', '-' or '_'"
            )

    @property
    def work_exchange(self) -> str:
        """Durable direct exchange producers publish to."""
        return self.prefix

    @property
    def ingest_queue(self) -> str:
        """Durable quorum queue the workers consume."""
        return f"{self.prefix}.ingest"

    @property
    def dead_exchange(self) -> str:
        """Fanout exchange dead letters are published to."""
        return f"{self.prefix}.dead"

    @property
    def dead_queue(self) -> str:
        """Durable quorum queue holding dead letters."""
        return f"{self.prefix}.dead"


def ingest_queue_arguments(topology: Topology) -> dict[str, Any]:
    """Arguments of the ingest queue: quorum, delivery limit 20, at-least-once dead-lettering to the dead exchange.

    pika encodes a ``str`` as a long string (``S``) and an ``int`` that fits as a 32-bit signed integer (``I``),
    the AMQP types lapin's ``LongString`` and ``LongInt`` write.
    """
    return {
        "x-dead-letter-exchange": topology.dead_exchange,
        "x-dead-letter-strategy": "at-least-once",
        "x-delivery-limit": DELIVERY_LIMIT,
        "x-overflow": "reject-publish",
        "x-queue-type": "quorum",
    }


def dead_queue_arguments() -> dict[str, Any]:
    """Arguments of the dead-letter queue: a quorum queue and nothing else."""
    return {"x-queue-type": "quorum"}


def declare(channel: pika.channel.Channel, topology: Topology, on_declared: Callable[[], None]) -> None:
    """Declares the work exchange, the dead-letter exchange and queue, and the ingest queue, with their bindings,
    in the worker's order; calls ``on_declared`` once the broker has answered all of them.

    pika sends these one at a time, each after the previous one's reply. A refusal closes the channel: the
    channel's close callback reports it, and ``on_declared`` is never called.
    """

    def ignore(_frame: Any) -> None:
        # A callback makes pika wait for the broker's reply (without one it sends the method with nowait).
        pass

    channel.exchange_declare(topology.work_exchange, exchange_type="direct", durable=True, callback=ignore)
    channel.exchange_declare(topology.dead_exchange, exchange_type="fanout", durable=True, callback=ignore)
    channel.queue_declare(topology.dead_queue, durable=True, arguments=dead_queue_arguments(), callback=ignore)
    channel.queue_bind(topology.dead_queue, topology.dead_exchange, routing_key="", callback=ignore)
    channel.queue_declare(
        topology.ingest_queue, durable=True, arguments=ingest_queue_arguments(topology), callback=ignore
    )
    channel.queue_bind(
        topology.ingest_queue, topology.work_exchange, routing_key=INGEST_ROUTING_KEY, callback=lambda _: on_declared()
    )
