"""The legacy ingestion worker's implementation, as a team would have written it before Quern: cut the text into
500-character pieces, embed them through an OpenAI-compatible API, write them to its own table. The shadow tests
run it in a real Celery worker beside ``quern-worker --shadow``.

Settings come from the environment: ``LEGACY_DATABASE_URL`` (Postgres), ``LEGACY_TABLE`` (default
``legacy_chunks``), ``LEGACY_EMBEDDING_URL`` (the embeddings endpoint's base URL) and ``LEGACY_EMBEDDING_MODEL``.
"""

from __future__ import annotations

import json
import os
import urllib.request
from typing import Any

#: The legacy worker's chunk size, in characters: not Quern's (1,000 with 200 of overlap), so long documents differ.
CHUNK_CHARS = 500

TABLE_DDL = """CREATE TABLE IF NOT EXISTS {table} (
    collection  text    NOT NULL,
    document_id text    NOT NULL,
    chunk_index integer NOT NULL,
    content     text    NOT NULL,
    embedding   vector  NOT NULL,
    PRIMARY KEY (collection, document_id, chunk_index)
)"""


def chunks(text: str) -> list[str]:
    """The legacy chunker: fixed 500-character pieces, no overlap (a short document is one piece)."""
    text = text.strip()
    return [text[i : i + CHUNK_CHARS] for i in range(0, len(text), CHUNK_CHARS)] or []


def embed(texts: list[str]) -> list[list[float]]:
    base = os.environ["LEGACY_EMBEDDING_URL"].rstrip("/")
    model = os.environ.get("LEGACY_EMBEDDING_MODEL", "quern-fake-lexical")
    request = urllib.request.Request(
        f"{base}/v1/embeddings",
        data=json.dumps({"model": model, "input": texts}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.load(response)
    return [item["embedding"] for item in sorted(answer["data"], key=lambda item: item["index"])]


def store(collection: str, document_id: Any, text: str, op: str = "upsert") -> int:
    """Replaces the document's chunks in the legacy table (or deletes them); returns how many it wrote."""
    import psycopg

    table = os.environ.get("LEGACY_TABLE", "legacy_chunks")
    pieces = chunks(text) if op != "delete" else []
    vectors = embed(pieces) if pieces else []
    with psycopg.connect(os.environ["LEGACY_DATABASE_URL"]) as connection:
        connection.execute(TABLE_DDL.format(table=table))
        connection.execute(
            f"DELETE FROM {table} WHERE collection = %s AND document_id = %s", (collection, str(document_id))
        )
        for index, (piece, vector) in enumerate(zip(pieces, vectors)):
            connection.execute(
                f"INSERT INTO {table} (collection, document_id, chunk_index, content, embedding) "
                "VALUES (%s, %s, %s, %s, %s::vector)",
                (collection, str(document_id), index, piece, json.dumps(vector)),
            )
    return len(pieces)
