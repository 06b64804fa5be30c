"""TLS for ``amqps://`` URLs, from the query parameters of RabbitMQ's own (Erlang) client, as the Rust workers
and CLI read them (``crates/quern-queue/src/tls.rs``), so that one ``QUERN_AMQP_URL`` serves every binary:

- ``cacertfile``: PEM file of the CAs to trust, and only those; without it, the system's (OpenSSL's default paths)
- ``certfile`` and ``keyfile``: a PEM client certificate and its unencrypted key, both or neither
- ``verify``: ``verify_peer`` (the default) or ``verify_none`` (no check of the broker's certificate: tests only)
- ``server_name_indication``: the name sent and checked instead of the URL's host

pika refuses query parameters it does not know, so these are taken out of the URL before pika sees it, and turned
into the ``ssl.SSLContext`` of pika's ``SSLOptions``. pika's own ``ssl_options=`` parameter still works, but not
mixed with these. A URL without any of them is left to pika as it is.
"""

from __future__ import annotations

import re
import ssl
from typing import Optional
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pika

PARAMETERS = ("cacertfile", "certfile", "keyfile", "verify", "server_name_indication")


def split_tls_parameters(url: str) -> tuple[str, dict[str, str]]:
    """``url`` without the TLS parameters, and those parameters; a ``ValueError`` naming what is wrong."""
    parts = urlsplit(url)
    kept: list[tuple[str, str]] = []
    found: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key not in PARAMETERS:
            kept.append((key, value))
        elif key in found:
            raise ValueError(f"amqp_url: {key} is given twice")
        else:
            found[key] = value
    if not found:
        return url, found
    if parts.scheme.lower() != "amqps":
        raise ValueError(f"amqp_url: {next(iter(found))} needs an amqps:// URL (amqp:// is never encrypted)")
    if any(key == "ssl_options" for key, _ in kept):
        raise ValueError(f"amqp_url: give either pika's ssl_options or {', '.join(PARAMETERS)}, not both")
    return urlunsplit(parts._replace(query=urlencode(kept))), found


def ssl_options(settings: dict[str, str]) -> pika.SSLOptions:
    """pika's TLS options for the parameters found by :func:`split_tls_parameters`, the files read now."""
    for key in ("cacertfile", "certfile", "keyfile", "server_name_indication"):
        if key in settings and not settings[key]:
            raise ValueError(f"amqp_url: {key} is empty")
    verify = settings.get("verify", "verify_peer")
    if verify not in ("verify_peer", "verify_none"):
        raise ValueError(f"amqp_url: verify must be verify_peer or verify_none, not {verify!r}")
    server_name: Optional[str] = settings.get("server_name_indication")
    if server_name == "disable":
        raise ValueError(
            "amqp_url: server_name_indication=disable is not supported: give the name the broker's certificate "
            "is for, or leave the parameter out to use the URL's host"
        )
    certfile, keyfile = settings.get("certfile"), settings.get("keyfile")
    if (certfile is None) != (keyfile is None):
        given, missing = ("certfile", "keyfile") if keyfile is None else ("keyfile", "certfile")
        raise ValueError(f"amqp_url: {given} is given without {missing}")

    cacertfile = settings.get("cacertfile")
    try:
        # With a cafile, only that CA is trusted; without, the system's.
        context = ssl.create_default_context(cafile=cacertfile)
    except (OSError, ValueError) as error:
        raise ValueError(f"amqp_url: cannot use cacertfile {cacertfile}: {_reason(error)}") from None
    if verify == "verify_none":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if certfile is not None:
        try:
            context.load_cert_chain(certfile, keyfile)
        except (OSError, ValueError) as error:
            raise ValueError(
                f"amqp_url: cannot use certfile {certfile} with keyfile {keyfile}: {_reason(error)}"
            ) from None
    return pika.SSLOptions(context, server_hostname=server_name)


def _reason(error: BaseException) -> str:
    if isinstance(error, ssl.SSLError):
        # e.g. "[X509: KEY_VALUES_MISMATCH] key values mismatch (_ssl.c:3874)" -> its reason, in words.
        return (error.reason or str(error)).lower().replace("_", " ")
    if isinstance(error, OSError) and error.strerror:
        return error.strerror[:1].lower() + error.strerror[1:]
    return str(error)


def describe_tls_error(error: BaseException, tls: bool = True) -> Optional[str]:
    """A TLS failure during connection in an operator's words, or ``None`` when ``error`` is not one; ``tls``
    says whether the connection was a TLS one (a reset then likely means a refused client certificate)."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return (
            f"TLS failed: the broker's certificate was refused: {error.verify_message} (is the broker's CA in "
            "cacertfile, and the URL's host, or server_name_indication, a name of its certificate?)"
        )
    if isinstance(error, ssl.SSLError) and not isinstance(error, ssl.SSLEOFError):
        reason = error.reason or str(error)
    else:
        # A refusal that comes after the handshake (TLS 1.3 checks the client's certificate then) reaches pika
        # as a lost stream, the SSLError kept only as text: "... SSLError(1, '[SSL: TLSV1_ALERT_UNKNOWN_CA] ...".
        found = re.search(r"\[SSL: ([A-Z0-9_]+)\]", str(error))
        if found is not None:
            reason = found.group(1)
        elif tls and _is_reset(error):
            # The broker's alert raced the client's first write, and the client saw the connection reset instead.
            return (
                "TLS failed: the broker closed the connection as it opened: does it want a client certificate "
                "(certfile and keyfile), or refuse the one given?"
            )
        else:
            return None
    reason = reason.lower().replace("_", " ")
    if "alert" in reason:
        return f"TLS failed: the broker refused the connection ({reason}): does it want a client certificate?"
    return f"TLS failed: {reason}"


def _is_reset(error: BaseException) -> bool:
    if isinstance(error, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError, ssl.SSLEOFError)):
        return True
    text = str(error)
    return any(name in text for name in ("ConnectionResetError", "BrokenPipeError", "SSLEOFError", "EOF occurred"))
