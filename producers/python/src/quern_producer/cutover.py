"""Cut-over by percentage, sticky per document: a share of documents goes to Quern, the rest through the caller's
legacy path (typically a Celery task's ``.delay``), chosen by a stable hash of (collection, document_id).

The rule is the same in every Quern producer (``schema/examples/cutover.json`` holds vectors all their tests
check): the bucket of a document is the first 8 bytes, big-endian, of SHA-256 over UTF-8 ``collection``, one 0x00
byte and UTF-8 ``document_id``, modulo 10,000; it goes to Quern when the bucket is below ``percent × 100``. So the
same document always goes the same way (its versions never race across two systems), 0 sends everything back
to the legacy path at once, and raising the percentage moves only the documents whose bucket lies in between.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from typing import Any, Callable

#: Buckets a document may fall in; a percentage is a threshold over them (two decimals of a percent).
BUCKETS = 10_000

#: ``legacy(collection, document_id, text, metadata)``: the caller's old ingestion path.
LegacyEnqueue = Callable[[str, str, str, Any], Any]
#: ``legacy_delete(collection, document_id)``: the old path's delete.
LegacyDelete = Callable[[str, str], Any]


def cutover_bucket(collection: str, document_id: str) -> int:
    """The document's bucket, 0 to 9,999: the same in every process, language and release."""
    digest = hashlib.sha256(collection.encode("utf-8") + b"\x00" + document_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def goes_to_quern(collection: str, document_id: str, percent: float) -> bool:
    """Whether the document goes to Quern at ``percent``. Comparing two percentages tells which documents a
    change moved (to backfill them into Quern when the legacy worker writes a table of its own)."""
    return cutover_bucket(collection, document_id) < _threshold(check_percent(percent))


def check_percent(percent: Any) -> float:
    """``percent`` as a float, or a ``ValueError`` naming ``cutover_percent``."""
    if isinstance(percent, bool) or not isinstance(percent, (int, float)) or not math.isfinite(percent):
        raise ValueError(f"cutover_percent must be a number from 0 to 100, got {percent!r}")
    if not 0 <= percent <= 100:
        raise ValueError(f"cutover_percent must be from 0 to 100, got {percent!r}")
    return float(percent)


def _threshold(percent: float) -> int:
    # Rounded half up (not Python's half-to-even), as JavaScript's Math.round does in the TypeScript producer.
    return math.floor(percent * 100 + 0.5)


class Cutover:
    """A producer's routing: the percentage (changeable at run time) and the legacy callables."""

    def __init__(self, percent: Any, legacy: LegacyEnqueue | None, legacy_delete: LegacyDelete | None) -> None:
        if legacy is not None and not callable(legacy):
            raise ValueError(f"legacy must be a callable (collection, document_id, text, metadata), got {legacy!r}")
        if legacy_delete is not None and not callable(legacy_delete):
            raise ValueError(f"legacy_delete must be a callable (collection, document_id), got {legacy_delete!r}")
        self.legacy = legacy
        self.legacy_delete = legacy_delete
        self._threshold = BUCKETS
        self.percent = percent

    @property
    def percent(self) -> float:
        return self._percent

    @percent.setter
    def percent(self, percent: Any) -> None:
        percent = check_percent(percent)
        if percent < 100 and self.legacy is None:
            raise ValueError(
                f"cutover_percent {percent:g} sends {100 - percent:g}% of documents to the legacy path: pass legacy="
                "(a callable taking collection, document_id, text, metadata)"
            )
        self._percent, self._threshold = percent, _threshold(percent)

    def routes(self, bodies: Sequence[Mapping[str, Any]]) -> list[bool]:
        """For each validated job body, whether it goes to Quern. Checked before anything is sent: a delete for
        the legacy side without ``legacy_delete`` raises here."""
        threshold = self._threshold
        if threshold >= BUCKETS:
            return [True] * len(bodies)
        routes = [cutover_bucket(b["collection"], b["document_id"]) < threshold for b in bodies]
        for body, to_quern in zip(bodies, routes):
            if not to_quern and body.get("op") == "delete" and self.legacy_delete is None:
                raise ValueError(
                    f"document {body['document_id']!r} of {body['collection']!r} is on the legacy path at "
                    f"cutover_percent {self._percent:g}: pass legacy_delete= to delete it there"
                )
        return routes

    def hand_over(self, body: Mapping[str, Any]) -> Any:
        """Calls the legacy path for one job body; returns what it returned (an awaitable stays one)."""
        if body.get("op") == "delete":
            assert self.legacy_delete is not None  # routes() refused this case
            return self.legacy_delete(body["collection"], body["document_id"])
        assert self.legacy is not None  # the percent setter refused this case
        return self.legacy(body["collection"], body["document_id"], body.get("text", ""), body.get("metadata"))


class CutoverSetting:
    """The ``cutover_percent`` property both producers expose over their :class:`Cutover`."""

    _cutover: Cutover

    @property
    def cutover_percent(self) -> float:
        """The percentage of documents sent to Quern (the rest go through ``legacy``); settable at run time: 0
        rolls every document back to the legacy path at once, and raising it moves only the documents in
        between (see :mod:`quern_producer.cutover`)."""
        return self._cutover.percent

    @cutover_percent.setter
    def cutover_percent(self, percent: float) -> None:
        self._cutover.percent = percent
