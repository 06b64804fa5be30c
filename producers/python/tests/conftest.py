"""Fixtures shared by the test modules: the broker, a queue prefix of each test's own (its queues and exchanges
deleted afterwards), and producers on that prefix that are closed afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Callable

import pytest
from support import AMQP_URL, Broker, TlsBroker, unique_name

from quern_producer import Producer


@pytest.fixture(scope="session")
def broker() -> Broker:
    return Broker()


@pytest.fixture(scope="session")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    """A RabbitMQ node of its own with a TLS listener, for the whole session; stopped at its end."""
    node = TlsBroker(tmp_path_factory.mktemp("tls") / "node")
    yield node
    node.stop()


@pytest.fixture
def prefix(broker: Broker) -> Iterator[str]:
    """A queue prefix no other test uses; its queues and exchanges are deleted after the test."""
    name = unique_name("qt_py")
    yield name
    broker.delete_topology(name, extra_queues=[f"{name}.full"])


@pytest.fixture
def make_producer(prefix: str) -> Iterator[Callable[..., Producer]]:
    """Builds producers on the test's prefix (AMQP_URL unless given); all are closed after the test."""
    made: list[Producer] = []

    def make(url: str = AMQP_URL, **options: Any) -> Producer:
        options.setdefault("queue_prefix", prefix)
        producer = Producer(url, **options)
        made.append(producer)
        return producer

    yield make
    for producer in made:
        producer.close()
