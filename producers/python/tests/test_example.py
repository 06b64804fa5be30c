"""The Flask example: through Flask's test client against the real broker (202 with a job id, 422 naming the
field, 503 while the broker is down, then 202 once it is back), and run as a script serving real HTTP."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from types import ModuleType
from typing import Any

from support import AMQP_URL, PACKAGE_ROOT, Broker, TcpProxy, free_port, wait_until

from quern_producer import Producer

EXAMPLE = PACKAGE_ROOT / "examples" / "flask_app.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("flask_app", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_posted_documents_are_enqueued_and_faults_answered(broker: Broker, prefix: str) -> None:
    made = []

    def factory() -> Producer:
        made.append(Producer(AMQP_URL, queue_prefix=prefix))
        return made[-1]

    client = load_example().create_app(factory).test_client()
    try:
        ok = client.post("/documents", json={"collection": "articles", "document_id": "a.md", "text": "Hello"})
        assert ok.status_code == 202
        job_id = ok.get_json()["job_id"]
        again = client.post(
            "/documents", json={"collection": "articles", "document_id": "b.md", "text": "Hi", "metadata": {"x": 1}}
        )
        assert again.status_code == 202

        missing = client.post("/documents", json={"collection": "articles", "text": "no id"})
        assert missing.status_code == 422 and "`document_id`" in missing.get_json()["error"]
        too_long = client.post("/documents", json={"collection": "c" * 129, "document_id": "d", "text": ""})
        assert too_long.status_code == 422 and "`collection`" in too_long.get_json()["error"]
        not_json = client.post("/documents", data="collection=c", content_type="application/x-www-form-urlencoded")
        assert not_json.status_code == 422
    finally:
        for producer in made:
            producer.close()
    assert len(made) == 1, "one producer for every request"
    messages = broker.take_all(f"{prefix}.ingest")
    assert [properties.message_id for properties, _ in messages][0] == job_id
    assert len(messages) == 2


def test_the_app_answers_503_while_the_broker_is_down_and_recovers(broker: Broker, prefix: str) -> None:
    proxy = TcpProxy()
    made = []

    def factory() -> Producer:
        made.append(Producer(proxy.url, queue_prefix=prefix))
        return made[-1]

    client = load_example().create_app(factory).test_client()
    document = {"collection": "articles", "document_id": "a.md", "text": "Hello"}
    try:
        proxy.cut()
        down = client.post("/documents", json=document)
        assert down.status_code == 503
        assert "unavailable" in down.get_json()["error"]
        proxy.restore()
        assert client.post("/documents", json=document).status_code == 202
        proxy.cut()
        assert client.post("/documents", json=document).status_code == 503
        proxy.restore()
        assert client.post("/documents", json=document).status_code == 202
    finally:
        for producer in made:
            producer.close()
        proxy.close()
    assert broker.ready_count(f"{prefix}.ingest") == 2


def _post(port: int, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/documents",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_the_example_runs_as_a_script(broker: Broker, prefix: str) -> None:
    port = free_port()
    environment = dict(os.environ, QUERN_AMQP_URL=AMQP_URL, QUERN_QUEUE_PREFIX=prefix)
    server = subprocess.Popen(
        [sys.executable, str(EXAMPLE), "--port", str(port)],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def answers() -> bool:
            assert server.poll() is None, server.stderr.read() if server.stderr else "exited"
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
            except urllib.error.HTTPError:
                return True  # 404 for / : the server is up
            except OSError:
                return False
            return True

        assert wait_until(answers, 30), "the example serves HTTP"
        status, body = _post(port, {"collection": "articles", "document_id": "a.md", "text": "Hello"})
        assert status == 202 and len(body["job_id"]) == 36
        status, body = _post(port, {"collection": "articles", "document_id": "", "text": "Hello"})
        assert status == 422 and "`document_id`" in body["error"]
    finally:
        server.terminate()
        server.wait(timeout=10)
    [(properties, _)] = broker.take_all(f"{prefix}.ingest")
    assert properties.message_id is not None
