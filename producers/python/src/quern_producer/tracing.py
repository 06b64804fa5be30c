"""W3C ``traceparent`` values for published jobs: the caller's OpenTelemetry span when one is active, otherwise a
fresh trace per job (as the Rust producer does), so a job's worker log lines always share one trace id.

OpenTelemetry is not a dependency: it is used only when ``opentelemetry`` (the API package) can be imported.
"""

from __future__ import annotations

import secrets
from typing import Any, Callable

#: The AMQP header carrying the value, as W3C Trace Context and every tracing library spell it.
TRACEPARENT_HEADER = "traceparent"

_current_span: Callable[[], Any] | None = None
_looked_up = False


def _otel_current_span() -> Callable[[], Any] | None:
    # Imported once, on first use: applications that do not trace pay nothing, not even the import attempt.
    global _current_span, _looked_up
    if not _looked_up:
        try:
            from opentelemetry import trace

            _current_span = trace.get_current_span
        except ImportError:
            _current_span = None
        _looked_up = True
    return _current_span


def caller_traceparent() -> str | None:
    """The ``traceparent`` of the caller's active OpenTelemetry span, or ``None`` when there is none."""
    get_current_span = _otel_current_span()
    if get_current_span is None:
        return None
    context = get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags) & 0xFF:02x}"


def new_root_traceparent() -> str:
    """A new trace (random ids, sampled) for a job whose caller is not tracing."""
    trace_id = secrets.randbits(128) or 1
    span_id = secrets.randbits(64) or 1
    return f"00-{trace_id:032x}-{span_id:016x}-01"
