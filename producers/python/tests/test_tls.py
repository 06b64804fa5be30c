"""``amqps://`` with RabbitMQ's TLS query parameters (cacertfile, certfile, keyfile, verify,
server_name_indication), against a node of its own with a TLS listener and a CA made for the run: jobs go through
both producers with the right CA, a wrong CA is refused with a message that says so, and bad settings are
``ValueError``s naming the parameter."""

from __future__ import annotations

import asyncio
import json

import pytest
from support import TlsBroker, unique_name

from quern_producer import AsyncProducer, BrokerError, Producer
from quern_producer._session import connection_parameters, describe_connect_error


def test_a_job_enqueued_over_tls_is_in_the_queue(tls_broker: TlsBroker) -> None:
    prefix = unique_name("qt_py_tls")
    url = tls_broker.url_with(
        cacertfile=tls_broker.file("ca.pem"),
        certfile=tls_broker.file("client.pem"),
        keyfile=tls_broker.file("client.key"),
    )
    with Producer(url, queue_prefix=prefix) as producer:
        job_id = producer.enqueue("articles", "tls.md", "sent over TLS")
    [(properties, body)] = tls_broker.take_all(f"{prefix}.ingest")
    assert properties.message_id == job_id
    assert json.loads(body)["text"] == "sent over TLS"


def test_the_async_producer_connects_by_ip_checking_the_name_given(tls_broker: TlsBroker) -> None:
    prefix = unique_name("qt_py_tls")
    url = tls_broker.url_with(cacertfile=tls_broker.file("ca.pem"), server_name_indication="localhost")
    url = url.replace("@localhost:", "@127.0.0.1:")

    async def main() -> str:
        async with AsyncProducer(url, queue_prefix=prefix) as producer:
            return await producer.enqueue("articles", "tls.md", "sent over TLS")

    job_id = asyncio.run(main())
    assert [properties.message_id for properties, _ in tls_broker.take_all(f"{prefix}.ingest")] == [job_id]


def test_a_wrong_ca_is_refused_with_a_clear_message(tls_broker: TlsBroker) -> None:
    with pytest.raises(BrokerError) as raised:
        Producer(tls_broker.url_with(cacertfile=tls_broker.file("other-ca.pem")), queue_prefix=unique_name("qt_py"))
    message = str(raised.value)
    # OpenSSL's words: "self-signed certificate in certificate chain" (the broker sends its CA along).
    assert "TLS failed: the broker's certificate was refused: " in message
    assert "is the broker's CA in cacertfile" in message
    assert "guest:guest" not in message


def test_a_client_certificate_the_broker_does_not_trust_is_refused(tls_broker: TlsBroker) -> None:
    url = tls_broker.url_with(
        cacertfile=tls_broker.file("ca.pem"),
        certfile=tls_broker.file("other-client.pem"),
        keyfile=tls_broker.file("other-client.key"),
    )
    # Usually the broker's alert; sometimes (TLS 1.3: the alert races the first write) only a reset.
    with pytest.raises(BrokerError, match="TLS failed: the broker (refused|closed) the connection.*client certificate"):
        Producer(url, queue_prefix=unique_name("qt_py"))


def test_verify_none_takes_any_certificate(tls_broker: TlsBroker) -> None:
    prefix = unique_name("qt_py_tls")
    url = tls_broker.url_with(cacertfile=tls_broker.file("other-ca.pem"), verify="verify_none")
    with Producer(url, queue_prefix=prefix) as producer:
        producer.enqueue("articles", "tls.md", "unverified")
    assert len(tls_broker.take_all(f"{prefix}.ingest")) == 1


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("certfile=/c.pem", "certfile is given without keyfile"),
        ("verify=yes", "verify must be verify_peer or verify_none, not 'yes'"),
        ("cacertfile=", "cacertfile is empty"),
        ("cacertfile=/a&cacertfile=/b", "cacertfile is given twice"),
        ("cacertfile=/nonexistent/ca.pem", "cannot use cacertfile /nonexistent/ca.pem: no such file or directory"),
        ("server_name_indication=disable", "server_name_indication=disable is not supported"),
        ("cacertfile=/ca.pem&ssl_options=%7B%7D", "give either pika's ssl_options or cacertfile"),
    ],
)
def test_bad_tls_settings_are_value_errors(query: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        connection_parameters(f"amqps://u:s3cret@h/%2f?{query}", "test", 5.0)
    assert "s3cret" not in str(raised.value)


def test_tls_parameters_on_a_plain_url_are_refused() -> None:
    with pytest.raises(ValueError, match="cacertfile needs an amqps:// URL"):
        Producer("amqp://guest:guest@127.0.0.1:5672/%2f?cacertfile=/ca.pem")


def test_urls_pika_already_read_are_read_as_before(tls_broker: TlsBroker) -> None:
    plain = connection_parameters("amqps://u:p@h:5671/%2f?heartbeat=7", "test", 5.0)
    assert plain.ssl_options is not None and plain.heartbeat == 7 and plain.port == 5671
    ca = tls_broker.file("ca.pem")
    pika_style = connection_parameters(f"amqps://u:p@h/%2f?ssl_options=%7B'ca_certs'%3A'{ca}'%7D", "test", 5.0)
    assert pika_style.ssl_options is not None
    ours = connection_parameters(f"amqps://u:p@h/%2f?heartbeat=7&cacertfile={ca}", "test", 5.0)
    assert ours.heartbeat == 7 and ours.ssl_options is not None and ours.ssl_options.server_hostname is None


def test_a_reset_as_a_tls_connection_opens_asks_about_the_client_certificate() -> None:
    reset = ConnectionResetError(104, "Connection reset by peer")
    assert "does it want a client certificate (certfile and keyfile), or refuse the one given?" in (
        describe_connect_error(reset, tls=True)
    )
    assert describe_connect_error(reset) == "connection reset by peer"
