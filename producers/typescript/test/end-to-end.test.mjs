// Jobs published by this package, processed by a real quern-worker (the Rust binary) into a database of this
// file's own, embedding through the Rust fake embedder: quern_jobs says succeeded, the documents and chunks are
// in Postgres, a delete removes its document. The topology is declared both ways round (producer first, worker
// first), which fails with PRECONDITION_FAILED if the queue arguments differ at all.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { Producer } from '@quern/producer';

import {
  AMQP_URL,
  createDatabase,
  deleteTopology,
  queueExists,
  startFakeEmbedder,
  startWorker,
  testPrefix,
  waitFor,
  waitForSucceeded,
} from './harness.mjs';

let db;
let embedder;
const cleanups = [];

before(async () => {
  db = await createDatabase();
  embedder = await startFakeEmbedder();
});

after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
  await embedder?.stop();
  await db?.drop();
});

/** A worker on `prefix`, stopped (and its queues deleted) at the end of the file; shows its log on failure. */
function worker(prefix) {
  const running = startWorker({ prefix, databaseUrl: db.url, embeddingUrl: embedder.url });
  cleanups.push(async () => {
    await running.stop();
    await deleteTopology(prefix);
  });
  return running;
}

async function producer(prefix) {
  const p = await Producer.connect(AMQP_URL, { queuePrefix: prefix });
  cleanups.push(() => p.close());
  return p;
}

const text = (i) => `Document ${i} is about ${['whales', 'lighthouses', 'bread', 'comets'][i % 4]}. `.repeat(3 + i);

describe('a real worker processes what this package publishes', () => {
  test('producer declares first, then the worker starts: upserts and a delete land in Postgres', async () => {
    const prefix = testPrefix('e2e_first');
    const p = await producer(prefix);
    const jobs = Array.from({ length: 12 }, (_, i) => ({
      collection: 'ts-first',
      documentId: `doc-${i}`,
      text: text(i),
      metadata: { i, lang: 'en' },
    }));
    const ids = await p.enqueueMany(jobs);
    ids.push(await p.enqueue({ collection: 'ts-first', documentId: 'doc-é/漢', text: 'Unicode ids work: ünïcödé 😀' }));
    // A delete right behind the upsert of the same document: the later job id wins, whichever finishes first.
    ids.push(await p.delete({ collection: 'ts-first', documentId: 'doc-0' }));

    const running = worker(prefix);
    const statuses = await waitForSucceeded(db, ids, 90_000);
    assert.deepEqual(
      ids.filter((id) => statuses[id] !== 'succeeded'),
      [],
      `every job succeeds: ${JSON.stringify(statuses)}\n--- worker log ---\n${running.output()}`,
    );

    const { rows: documents } = await db.query(
      `SELECT document_id, chunk_count, metadata FROM quern_documents WHERE collection = 'ts-first' ORDER BY document_id`,
    );
    const expected = [...Array.from({ length: 11 }, (_, i) => `doc-${i + 1}`), 'doc-é/漢'].sort();
    assert.deepEqual(documents.map((d) => d.document_id).sort(), expected, 'doc-0 deleted, the others stored');
    assert.deepEqual(documents.find((d) => d.document_id === 'doc-3').metadata, { i: 3, lang: 'en' });
    const { rows: chunks } = await db.query(
      `SELECT count(*)::int AS n, count(DISTINCT document_id)::int AS docs FROM quern_chunks WHERE collection = 'ts-first'`,
    );
    assert.equal(chunks[0].docs, 12);
    assert.equal(
      chunks[0].n,
      documents.reduce((sum, d) => sum + d.chunk_count, 0),
    );
    const { rows: ops } = await db.query(
      `SELECT op, count(*)::int AS n FROM quern_jobs WHERE job_id = ANY($1::uuid[]) GROUP BY op`,
      [ids],
    );
    assert.deepEqual(Object.fromEntries(ops.map((r) => [r.op, r.n])), { upsert: 13, delete: 1 });
  });

  test('the worker declares first, then the producer connects: the same queue arguments, jobs succeed', async () => {
    const prefix = testPrefix('e2e_worker_first');
    const running = worker(prefix);
    const declared = await waitFor(() => queueExists(`${prefix}.ingest`), 60_000);
    assert.ok(declared, `the worker declares its queues\n--- worker log ---\n${running.output()}`);
    const p = await producer(prefix);
    const ids = await p.enqueueMany([
      { collection: 'ts-second', documentId: 'a', text: text(1) },
      { collection: 'ts-second', documentId: 'b', text: text(2), metadata: null },
    ]);
    const statuses = await waitForSucceeded(db, ids, 60_000);
    assert.deepEqual(
      ids.map((id) => statuses[id]),
      ['succeeded', 'succeeded'],
      `--- worker log ---\n${running.output()}`,
    );
    const { rows } = await db.query(`SELECT count(*)::int AS n FROM quern_documents WHERE collection = 'ts-second'`);
    assert.equal(rows[0].n, 2);
  });
});
