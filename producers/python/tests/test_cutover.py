"""Cut-over by percentage, sticky per document: the shared routing vectors, the split and its stability, and,
against the real RabbitMQ, that the legacy share is never published and the Quern share always is."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Callable

import pytest
from support import AMQP_URL, REPO_ROOT, Broker

from quern_producer import AsyncProducer, InvalidJob, Job, Producer, cutover_bucket, goes_to_quern


class LegacyPath:
    """Stands in for ``ingest_document.delay``: records each call and returns a ticket for it."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.deletes: list[tuple[str, str]] = []

    def enqueue(self, collection: str, document_id: str, text: str, metadata: Any) -> str:
        self.calls.append((collection, document_id, text, metadata))
        return f"legacy:{document_id}"

    def delete(self, collection: str, document_id: str) -> str:
        self.deletes.append((collection, document_id))
        return f"legacy-delete:{document_id}"


def ids_on(side: str, percent: float, count: int, collection: str = "docs") -> list[str]:
    """``count`` document ids that go to ``side`` ("quern" or "legacy") at ``percent``."""
    found = []
    n = 0
    while len(found) < count:
        document_id = f"doc-{n}.md"
        if goes_to_quern(collection, document_id, percent) == (side == "quern"):
            found.append(document_id)
        n += 1
    return found


def test_every_producer_computes_the_same_buckets() -> None:
    vectors = json.loads((REPO_ROOT / "schema" / "examples" / "cutover.json").read_text(encoding="utf-8"))
    assert len(vectors["cases"]) >= 8
    for case in vectors["cases"]:
        assert cutover_bucket(case["collection"], case["document_id"]) == case["bucket"], case


def test_the_split_holds_is_sticky_and_a_raise_moves_only_the_documents_in_between() -> None:
    ids = [f"{n}" for n in range(10_000)]
    at_30 = {i for i in ids if goes_to_quern("articles", i, 30)}
    assert 2_700 <= len(at_30) <= 3_300, len(at_30)
    assert at_30 == {i for i in ids if goes_to_quern("articles", i, 30)}, "the same document, the same way"
    at_50 = {i for i in ids if goes_to_quern("articles", i, 50)}
    assert at_30 <= at_50, "raising the percentage moves no document back"
    assert at_50 - at_30 == {i for i in ids if 3_000 <= cutover_bucket("articles", i) < 5_000}
    assert not any(goes_to_quern("articles", i, 0) for i in ids)
    assert all(goes_to_quern("articles", i, 100) for i in ids)
    assert len({i for i in ids if goes_to_quern("articles", i, 0.5)}) < 100, "half a percent is 50 buckets"


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"cutover_percent": 30}, "pass legacy="),
        ({"cutover_percent": 101, "legacy": print}, "from 0 to 100"),
        ({"cutover_percent": -1, "legacy": print}, "from 0 to 100"),
        ({"cutover_percent": float("nan"), "legacy": print}, "cutover_percent"),
        ({"cutover_percent": True, "legacy": print}, "cutover_percent"),
        ({"cutover_percent": "30", "legacy": print}, "cutover_percent"),
        ({"cutover_percent": 30, "legacy": "ingest_document"}, "legacy must be a callable"),
    ],
)
def test_bad_cutover_settings_are_refused_before_connecting(options: dict[str, Any], says: str) -> None:
    # The URL points nowhere: the settings are checked first, so the error is about them.
    with pytest.raises(ValueError, match=says):
        Producer("amqp://guest:guest@127.0.0.1:1/%2f", **options)
    with pytest.raises(ValueError, match=says):
        AsyncProducer("amqp://guest:guest@127.0.0.1:1/%2f", **options)


def test_the_legacy_share_goes_through_legacy_and_the_quern_share_is_published(
    make_producer: Callable[..., Producer], broker: Broker, prefix: str
) -> None:
    legacy = LegacyPath()
    producer = make_producer(cutover_percent=30, legacy=legacy.enqueue, legacy_delete=legacy.delete)
    quern_ids, legacy_ids = ids_on("quern", 30, 3), ids_on("legacy", 30, 4)
    jobs = [Job.upsert("docs", d, f"text of {d}", metadata={"d": d}) for d in [*legacy_ids[:2], *quern_ids, *legacy_ids[2:]]]
    results = producer.enqueue_many(jobs)
    assert results[:2] == [f"legacy:{d}" for d in legacy_ids[:2]]
    assert results[5:] == [f"legacy:{d}" for d in legacy_ids[2:]]
    assert all(len(r) == 36 for r in results[2:5]), "the Quern share returns job ids"
    assert legacy.calls == [("docs", d, f"text of {d}", {"d": d}) for d in legacy_ids]
    assert broker.ready_count(f"{prefix}.ingest") == 3
    published = sorted(json.loads(body)["document_id"] for _, body in broker.take_all(f"{prefix}.ingest"))
    assert published == sorted(quern_ids)

    # Sticky: every later call for a document goes the way its first did, from this producer or another.
    other = make_producer(cutover_percent=30, legacy=legacy.enqueue, legacy_delete=legacy.delete)
    assert other.enqueue("docs", legacy_ids[0], "v2") == f"legacy:{legacy_ids[0]}"
    assert producer.delete("docs", legacy_ids[1]) == f"legacy-delete:{legacy_ids[1]}"
    assert len(producer.delete("docs", quern_ids[0])) == 36
    assert broker.ready_count(f"{prefix}.ingest") == 1


def test_zero_rolls_back_at_once_and_a_hundred_never_calls_legacy(
    make_producer: Callable[..., Producer], broker: Broker, prefix: str
) -> None:
    legacy = LegacyPath()
    producer = make_producer(cutover_percent=100, legacy=legacy.enqueue)
    documents = ids_on("quern", 100, 5)
    producer.enqueue_many([Job.upsert("docs", d, "t") for d in documents])
    assert legacy.calls == [] and broker.ready_count(f"{prefix}.ingest") == 5
    producer.cutover_percent = 0
    assert [producer.enqueue("docs", d, "t") for d in documents] == [f"legacy:{d}" for d in documents]
    assert broker.ready_count(f"{prefix}.ingest") == 5, "nothing more published after the rollback"
    with pytest.raises(ValueError, match="legacy_delete"):
        producer.delete("docs", documents[0])
    with pytest.raises(ValueError, match="from 0 to 100"):
        producer.cutover_percent = 150
    assert producer.cutover_percent == 0


def test_invalid_input_anywhere_sends_nothing_either_way(
    make_producer: Callable[..., Producer], broker: Broker, prefix: str
) -> None:
    legacy = LegacyPath()
    producer = make_producer(cutover_percent=50, legacy=legacy.enqueue)
    good = [Job.upsert("docs", d, "t") for d in [*ids_on("quern", 50, 2), *ids_on("legacy", 50, 2)]]
    with pytest.raises(InvalidJob, match="document_id"):
        producer.enqueue_many([*good, {"collection": "docs", "document_id": "", "text": "t"}])
    # A delete on the legacy side without legacy_delete is refused before the batch's other jobs go anywhere.
    with pytest.raises(ValueError, match="legacy_delete"):
        producer.enqueue_many([*good, Job.delete("docs", ids_on("legacy", 50, 1)[0])])
    assert legacy.calls == [] and broker.ready_count(f"{prefix}.ingest") == 0


def test_the_async_producer_awaits_an_async_legacy_path(broker: Broker, prefix: str) -> None:
    calls: list[str] = []

    async def legacy(collection: str, document_id: str, text: str, metadata: Any) -> str:
        await asyncio.sleep(0)
        calls.append(document_id)
        return f"async-legacy:{document_id}"

    async def run() -> list[Any]:
        async with AsyncProducer(AMQP_URL, queue_prefix=prefix, cutover_percent=40, legacy=legacy) as producer:
            documents = [*ids_on("legacy", 40, 2), *ids_on("quern", 40, 2)]
            return await producer.enqueue_many([Job.upsert("docs", d, "t") for d in documents])

    results = asyncio.run(run())
    assert results[:2] == [f"async-legacy:{d}" for d in calls] and len(calls) == 2
    assert all(len(r) == 36 for r in results[2:])
    assert broker.ready_count(f"{prefix}.ingest") == 2
