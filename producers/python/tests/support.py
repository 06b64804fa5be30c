"""Helpers for the tests, against the real services: RabbitMQ seen through pika, a Postgres database of a test's
own, the Rust binaries (fake embedder and worker) as child processes, and a TCP proxy that cuts or stalls the
producer's connection on demand.

Service URLs come from QUERN_TEST_AMQP_URL and QUERN_TEST_DATABASE_URL (set by scripts/test.sh); the defaults
match scripts/services.sh.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlencode, urlsplit, urlunsplit

import pika
import pika.exceptions
import pytest

AMQP_URL = os.environ.get("QUERN_TEST_AMQP_URL") or "amqp://guest:guest@127.0.0.1:5672/%2f"
DATABASE_URL = os.environ.get("QUERN_TEST_DATABASE_URL") or "postgresql://postgres@127.0.0.1:5433/postgres"
REPO_ROOT = Path(__file__).resolve().parents[3]
PACKAGE_ROOT = Path(__file__).resolve().parents[1]
#: Vector size the tests' embedder and workers use (as crates/quern-testkit's TEST_DIM).
TEST_DIM = 64
#: Retry delays the tests' workers use, so their delay queues are known and deleted afterwards.
TEST_RETRY_TIERS = ("100ms", "200ms")
_DEFAULT_RETRY_TIERS = ("1s", "10s", "60s", "300s")


def unique_name(label: str) -> str:
    """A name no other test run uses: ``<label>_<12 hex>``."""
    return f"{label}_{uuid.uuid4().hex[:12]}"


def load_examples(kind: str) -> list[tuple[str, Any]]:
    """The contract's shared examples (``accepted`` or ``rejected``) as (name, body) pairs."""
    path = REPO_ROOT / "schema" / "examples" / f"{kind}.json"
    examples = json.loads(path.read_text(encoding="utf-8"))
    assert len(examples) > 5, f"{path} holds the examples"
    return [(example["name"], example["body"]) for example in examples]


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """Polls ``check`` until it is true (returns True) or ``timeout`` seconds pass (returns False)."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (nothing listens on it once this returns)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def url_with_host(url: str, host: str, port: int) -> str:
    """``url`` pointed at ``host:port``, user, password and virtual host kept."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{host}:{port}" if userinfo else f"{host}:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


class Broker:
    """RabbitMQ as the tests see it, through a plain pika connection of their own."""

    def __init__(self, url: str = AMQP_URL) -> None:
        self.url = url

    def _channel(self) -> tuple[pika.BlockingConnection, Any]:
        connection = pika.BlockingConnection(pika.URLParameters(self.url))
        return connection, connection.channel()

    def queue_exists(self, queue: str) -> bool:
        connection, channel = self._channel()
        try:
            channel.queue_declare(queue, passive=True)
            return True
        except pika.exceptions.ChannelClosedByBroker:
            return False
        finally:
            if connection.is_open:
                connection.close()

    def ready_count(self, queue: str) -> int:
        """Messages ready in ``queue`` (a passive declare; no management plugin needed)."""
        connection, channel = self._channel()
        try:
            return int(channel.queue_declare(queue, passive=True).method.message_count)
        finally:
            connection.close()

    def take_all(self, queue: str) -> list[tuple[pika.BasicProperties, bytes]]:
        """Removes and returns every ready message of ``queue``."""
        connection, channel = self._channel()
        messages: list[tuple[pika.BasicProperties, bytes]] = []
        try:
            while True:
                method, properties, body = channel.basic_get(queue, auto_ack=True)
                if method is None:
                    return messages
                messages.append((properties, body))
        finally:
            connection.close()

    def run(self, action: Callable[[Any], Any]) -> Any:
        """Runs ``action(channel)`` on a channel of its own."""
        connection, channel = self._channel()
        try:
            return action(channel)
        finally:
            if connection.is_open:
                connection.close()

    def delete_topology(self, prefix: str, extra_queues: Sequence[str] = ()) -> None:
        """Deletes the queues and exchanges of ``prefix`` (the worker's delay queues included)."""
        retry = [f"{prefix}.retry.{tier}" for tier in TEST_RETRY_TIERS + _DEFAULT_RETRY_TIERS]
        queues = [f"{prefix}.ingest", f"{prefix}.dead", *retry, *extra_queues]
        connection, channel = self._channel()
        try:
            for queue in queues:
                channel.queue_delete(queue)
            for exchange in (prefix, f"{prefix}.dead"):
                channel.exchange_delete(exchange)
        finally:
            connection.close()


class TlsBroker(Broker):
    """A throwaway RabbitMQ node with a TLS listener and a CA made for it (``scripts/rabbitmq-tls.sh``), seen
    through pika's own TLS options (not the producer's reading of the URL). ``stop`` ends it; so does the script's
    watchdog once this process is gone."""

    SCRIPT = REPO_ROOT / "scripts" / "rabbitmq-tls.sh"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        done = subprocess.run(
            ["bash", str(self.SCRIPT), "start", str(directory), str(os.getpid())],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{self.SCRIPT} start failed:\n{done.stderr}")
        settings = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
        self.port = int(settings["QUERN_TLS_PORT"])
        self.tls = Path(settings["QUERN_TLS_DIR"])
        super().__init__(f"amqps://guest:guest@localhost:{self.port}/%2f")

    def file(self, name: str) -> str:
        return str(self.tls / name)

    def url_with(self, **query: str) -> str:
        """The node's URL with these query parameters, e.g. ``cacertfile=broker.file("ca.pem")``."""
        return f"{self.url}?{urlencode(query)}" if query else self.url

    def _channel(self) -> tuple[pika.BlockingConnection, Any]:
        parameters = pika.URLParameters(self.url)
        context = ssl.create_default_context(cafile=self.file("ca.pem"))
        parameters.ssl_options = pika.SSLOptions(context, server_hostname="localhost")
        connection = pika.BlockingConnection(parameters)
        return connection, connection.channel()

    def stop(self) -> None:
        subprocess.run(["bash", str(self.SCRIPT), "stop", str(self.directory)], check=False, timeout=60)


class TcpProxy:
    """A TCP proxy to the broker that a test can cut (connections closed, port refusing) or stall (bytes from
    the broker dropped, connections left open), then restore."""

    def __init__(self, target_url: str = AMQP_URL) -> None:
        parts = urlsplit(target_url)
        self._target = (parts.hostname or "127.0.0.1", parts.port or 5672)
        self.port = free_port()
        self.url = url_with_host(target_url, "127.0.0.1", self.port)
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._stalled = False
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        """Listens again and forwards everything."""
        with self._lock:
            self._stalled = False
            if self._listener is None:
                listener = socket.socket()
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                listener.bind(("127.0.0.1", self.port))
                listener.listen(16)
                self._listener = listener
                threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self, *, keep_listening: bool = False) -> None:
        """Closes every proxied connection (the client sees the broker's side go away) and, unless
        ``keep_listening``, stops listening: new connections are refused until :meth:`restore`."""
        with self._lock:
            if not keep_listening and self._listener is not None:
                _close(self._listener)
                self._listener = None
            pairs, self._pairs = self._pairs, []
        for client, upstream in pairs:
            _close(client)
            _close(upstream)

    def stall(self) -> None:
        """Drops whatever the broker sends from now on, keeping the connections open: confirms never arrive."""
        with self._lock:
            self._stalled = True

    def close(self) -> None:
        self.cut()

    def open_connections(self) -> int:
        """Proxied connections neither side has closed yet."""
        with self._lock:
            return sum(1 for client, _ in self._pairs if client.fileno() != -1)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._pairs.append((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_broker: bool) -> None:
        try:
            while True:
                readable, _, _ = select.select([source], [], [], 0.5)
                if not readable:
                    continue
                data = source.recv(65536)
                if not data:
                    break
                if from_broker and self._stalled:
                    continue
                sink.sendall(data)
        except (OSError, ValueError):
            pass
        _close(source)
        _close(sink)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def close_broker_connection(connection_name: str) -> bool:
    """Closes, from the broker's side, the connection whose client named itself ``connection_name``, with
    ``rabbitmqctl close_connection``; False when rabbitmqctl is not usable here (not installed, no rights)."""
    try:
        listed = subprocess.run(
            ["rabbitmqctl", "-q", "list_connections", "pid", "client_properties"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    if listed.returncode != 0:
        return False
    pids = [line.split("\t", 1)[0] for line in listed.stdout.splitlines() if f'"{connection_name}"' in line]
    if len(pids) != 1:
        return False
    closed = subprocess.run(
        ["rabbitmqctl", "-q", "close_connection", pids[0], "closed by a quern-producer test"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return closed.returncode == 0


class ScratchDatabase:
    """A Postgres database of its own for one test module (psycopg is a test dependency only)."""

    def __init__(self) -> None:
        import psycopg

        self.name = unique_name("quern_pytest")
        with psycopg.connect(DATABASE_URL, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{self.name}"')
        parts = urlsplit(DATABASE_URL)
        self.url = urlunsplit(parts._replace(path=f"/{self.name}"))

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as connection:
            return list(connection.execute(sql, params).fetchall())

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Runs a statement that returns no rows."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as connection:
            connection.execute(sql, params)

    def job_statuses(self, job_ids: Sequence[str]) -> dict[str, str]:
        """Job id to status in quern_jobs (jobs not recorded yet are absent); {} before the worker migrated."""
        try:
            rows = self.query(
                "SELECT job_id::text, status FROM quern_jobs WHERE job_id = ANY(%s::uuid[])", (list(job_ids),)
            )
        except Exception as error:  # noqa: BLE001 - the table appears once the worker has migrated
            if "quern_jobs" in str(error):
                return {}
            raise
        return {job_id: status for job_id, status in rows}

    def drop(self) -> None:
        import psycopg

        with psycopg.connect(DATABASE_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def binary(name: str) -> Path:
    """A Rust binary built by ``cargo test --workspace --all-targets`` (target/debug, or $QUERN_BIN_DIR)."""
    directory = Path(os.environ.get("QUERN_BIN_DIR") or REPO_ROOT / "target" / "debug")
    path = directory / name
    if not path.is_file():
        raise RuntimeError(
            f"{path} is missing: build the workspace first (cargo test --workspace --all-targets --no-run, as "
            "scripts/test.sh does), or set QUERN_BIN_DIR"
        )
    return path


def _child_environment(extra: dict[str, str]) -> dict[str, str]:
    # No QUERN_* setting of the developer's shell may leak into a child (a QUERN_CONFIG file, say).
    environment = {key: value for key, value in os.environ.items() if not key.startswith("QUERN_")}
    environment.update(extra)
    return environment


class FakeEmbedder:
    """``quern-fake-embedder`` on a free port, vectors of TEST_DIM."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [str(binary("quern-fake-embedder")), "--port", "0", "--dim", str(TEST_DIM)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=_child_environment({}),
        )
        assert self.process.stdout is not None
        # It prints exactly one line once it listens: "quern-fake-embedder listening on <url> (dim N)".
        line = self.process.stdout.readline()
        if "listening on" not in line:
            self.stop()
            raise RuntimeError(f"quern-fake-embedder did not start: {line!r}")
        self.url = line.split("listening on ", 1)[1].split()[0]

    def stop(self) -> None:
        _stop(self.process)


class Worker:
    """``quern-worker`` on a queue prefix and database, logging JSON lines to ``log_path``; ``settings`` adds
    ``QUERN_*`` variables (the Celery suite's ``QUERN_CELERY_*``, say)."""

    def __init__(
        self,
        prefix: str,
        database_url: str,
        embedding_url: str,
        log_path: Path,
        settings: dict[str, str] | None = None,
    ) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.process = subprocess.Popen(
            [str(binary("quern-worker"))],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            env=_child_environment(
                {
                    "QUERN_AMQP_URL": AMQP_URL,
                    "QUERN_QUEUE_PREFIX": prefix,
                    "QUERN_DATABASE_URL": database_url,
                    "QUERN_EMBEDDING_URL": embedding_url,
                    "QUERN_EMBEDDING_DIM": str(TEST_DIM),
                    "QUERN_MIGRATE": "true",
                    "QUERN_METRICS_ADDR": "127.0.0.1:0",
                    "QUERN_LOG_FORMAT": "json",
                    "QUERN_RETRY_TIERS": ",".join(TEST_RETRY_TIERS),
                    "QUERN_SEGMENT_MAINTENANCE": "false",
                    **(settings or {}),
                }
            ),
        )

    def log_lines(self) -> Iterator[dict[str, Any]]:
        for line in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                yield json.loads(line)
            except ValueError:
                continue

    def stop(self) -> None:
        _stop(self.process)
        self._log.close()


def _stop(process: subprocess.Popen) -> None:  # type: ignore[type-arg]
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# Fixtures for test modules that run the worker: a module imports them (`from support import database, embedder`)
# to get its own database and fake embedder.


@pytest.fixture(scope="module")
def database() -> Iterator[ScratchDatabase]:
    """A Postgres database of the module's own, dropped afterwards."""
    db = ScratchDatabase()
    yield db
    db.drop()


@pytest.fixture(scope="module")
def embedder() -> Iterator[FakeEmbedder]:
    """A fake embedder for the module, stopped afterwards."""
    server = FakeEmbedder()
    yield server
    server.stop()
