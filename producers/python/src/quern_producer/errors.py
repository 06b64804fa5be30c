"""The exceptions of quern_producer: invalid input (a ``ValueError``) and broker trouble.

``QuernError`` is the base of both, so ``except QuernError`` catches everything the package raises on purpose.
An HTTP handler answers 4xx for ``InvalidJob`` (the caller's input is at fault) and 5xx for ``BrokerError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class QuernError(Exception):
    """Base class of every error raised by quern_producer."""


class InvalidJob(QuernError, ValueError):
    """A job breaks the contract; nothing of the call was published.

    ``field`` names the field at fault (``None`` when the body as a whole is wrong, e.g. not a mapping),
    ``reason`` says what is wrong with it, and ``index`` is the job's position in an ``enqueue_many`` batch.
    """

    def __init__(self, field: str | None, reason: str, *, index: int | None = None) -> None:
        self.field = field
        self.reason = reason
        self.index = index
        where = f"field `{field}`: " if field is not None else ""
        which = f"job {index}: " if index is not None else ""
        super().__init__(f"{which}{where}{reason}")

    def at_index(self, index: int) -> InvalidJob:
        """The same error, naming the job's position in a batch."""
        return InvalidJob(self.field, self.reason, index=index)

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only arguments: the default pickling (args only) could not rebuild the error.
        return (_rebuild_invalid_job, (self.field, self.reason, self.index))


class BrokerError(QuernError):
    """RabbitMQ did not take the jobs: connection refused or lost, a nack, an unroutable message, or no confirm
    within the timeout.

    ``job_ids`` are the jobs the error concerns. None of them is known to be enqueued, yet some may be: enqueueing
    them again with the same job ids is safe (a worker treats a job id it finished as done). The next call
    reconnects when the connection was lost.
    """

    def __init__(self, message: str, *, job_ids: Sequence[str] = ()) -> None:
        self.job_ids: tuple[str, ...] = tuple(job_ids)
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_broker_error, (str(self), self.job_ids))


def _rebuild_invalid_job(field: str | None, reason: str, index: int | None) -> InvalidJob:
    return InvalidJob(field, reason, index=index)


def _rebuild_broker_error(message: str, job_ids: Sequence[str]) -> BrokerError:
    return BrokerError(message, job_ids=job_ids)
