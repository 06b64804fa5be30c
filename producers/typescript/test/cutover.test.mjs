// Cut-over by percentage, sticky per document: the routing rule against the vectors every producer checks
// (schema/examples/cutover.json), its spread and stability, then a producer against the real RabbitMQ sending
// a share of documents to Quern and the rest to a legacy function: what is published, what legacy gets and
// returns, deletes, batches, validation before routing, the options checked at connect, and rollback.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';

import { BrokerError, InvalidJobError, JOB_ID_PATTERN, Producer, cutoverBucket, goesToQuern } from '@quern/producer';

import { AMQP_URL, REPO_ROOT, deleteTopology, drain, freePort, readyCount, testPrefix, viaPort } from './harness.mjs';

const vectors = JSON.parse(readFileSync(join(REPO_ROOT, 'schema', 'examples', 'cutover.json'), 'utf8'));

/** 10,000 document ids of one collection, as a team's would look. */
const IDS = Array.from({ length: 10_000 }, (_, i) => `doc-${i}.md`);
const COLLECTION = 'articles';

/** The first document ids of COLLECTION whose bucket satisfies `wanted`. */
function idsWhere(wanted, count = 1) {
  const found = [];
  for (let i = 0; found.length < count; i++) {
    if (wanted(cutoverBucket(COLLECTION, `id-${i}`))) found.push(`id-${i}`);
  }
  return found;
}

/** A fresh prefix for one test, its queues deleted and its producers closed when the test ends. */
function scope(t, label) {
  const prefix = testPrefix(label);
  const producers = [];
  t.after(async () => {
    for (const producer of producers) await producer.close();
    await deleteTopology(prefix);
  });
  return {
    prefix,
    ingest: `${prefix}.ingest`,
    async producer(options = {}) {
      const producer = await Producer.connect(AMQP_URL, { queuePrefix: prefix, ...options });
      producers.push(producer);
      return producer;
    },
  };
}

/** A legacy function that records its arguments and resolves, a tick later, to `answer(argument)`. */
function recorder(answer = (arg) => `legacy:${arg.documentId}`) {
  const calls = [];
  const fn = async (arg) => {
    calls.push(arg);
    await new Promise((resolve) => setImmediate(resolve));
    return answer(arg);
  };
  fn.calls = calls;
  return fn;
}

const upsert = (documentId, extra = {}) => ({
  collection: COLLECTION,
  documentId,
  text: `text of ${documentId}`,
  ...extra,
});
const remove = (documentId) => ({ collection: COLLECTION, documentId, op: 'delete' });
const isJobId = (value) => typeof value === 'string' && JOB_ID_PATTERN.test(value);

describe('the routing rule', () => {
  test('every case of schema/examples/cutover.json gives its bucket', () => {
    assert.ok(vectors.cases.length >= 8);
    for (const { collection, document_id: documentId, bucket } of vectors.cases) {
      assert.equal(cutoverBucket(collection, documentId), bucket, `${collection} / ${JSON.stringify(documentId)}`);
    }
  });

  test('at 30% between 27% and 33% of 10,000 documents go to Quern; 0% none, 100% all', () => {
    const at = (percent) => IDS.filter((id) => goesToQuern(COLLECTION, id, percent)).length;
    const share = at(30);
    assert.ok(share >= 2_700 && share <= 3_300, `${share} of 10,000`);
    assert.equal(at(0), 0);
    assert.equal(at(100), 10_000);
  });

  test('the same document always goes the same way', () => {
    for (const id of IDS.slice(0, 500)) {
      const first = goesToQuern(COLLECTION, id, 30);
      for (let i = 0; i < 3; i++) assert.equal(goesToQuern(COLLECTION, id, 30), first, id);
      assert.equal(cutoverBucket(COLLECTION, id), cutoverBucket(COLLECTION, id), id);
    }
    // The collection is part of the key: the same id in two collections is two documents.
    assert.notEqual(cutoverBucket('a', 'bc'), cutoverBucket('ab', 'c'), 'the 0x00 separator keeps them apart');
  });

  test('raising 30 -> 50 moves exactly the documents with bucket in [3000, 5000), and none back', () => {
    for (const id of IDS) {
      const bucket = cutoverBucket(COLLECTION, id);
      const before = goesToQuern(COLLECTION, id, 30);
      const after = goesToQuern(COLLECTION, id, 50);
      assert.equal(after && !before, bucket >= 3_000 && bucket < 5_000, `${id}, bucket ${bucket}`);
      assert.ok(!before || after, `${id} moved back to the legacy path`);
    }
  });

  test('a percentage has two decimals: the threshold is percent x 100, rounded', () => {
    const [below] = idsWhere((b) => b === 3_332);
    const [at] = idsWhere((b) => b === 3_333);
    assert.ok(goesToQuern(COLLECTION, below, 33.33));
    assert.ok(!goesToQuern(COLLECTION, at, 33.33));
    assert.ok(goesToQuern(COLLECTION, at, 33.34));
    assert.ok(goesToQuern(COLLECTION, at, 33.335), 'half a bucket rounds up');
  });

  test('what no other producer could hash, and percentages out of range, are refused', () => {
    assert.throws(() => cutoverBucket('c', 'a\ud800b'), { name: 'TypeError', message: /documentId.*surrogate/ });
    assert.throws(() => cutoverBucket(undefined, 'd'), { name: 'TypeError', message: /collection/ });
    for (const bad of [-1, 100.5, Number.NaN, Number.POSITIVE_INFINITY, '30', null]) {
      assert.throws(() => goesToQuern('c', 'd', bad), { name: 'RangeError', message: /percent/ }, String(bad));
    }
  });
});

describe('a producer in a cut-over, against RabbitMQ', () => {
  test('at 0% nothing reaches the ingest queue; legacy gets every job and its result comes back', async (t) => {
    const s = scope(t, 'cut0');
    const legacy = recorder((job) => ({ task: `celery-${job.documentId}` }));
    const producer = await s.producer({ cutoverPercent: 0, legacy });
    assert.equal(producer.cutoverPercent, 0);

    const result = await producer.enqueue(upsert('a.md', { metadata: { lang: 'en' }, jobId: crypto.randomUUID() }));
    assert.deepEqual(result, { task: 'celery-a.md' });
    const many = await producer.enqueueMany([upsert('b.md'), upsert('c.md')]);
    assert.deepEqual(many, [{ task: 'celery-b.md' }, { task: 'celery-c.md' }]);

    assert.deepEqual(legacy.calls, [
      { collection: COLLECTION, documentId: 'a.md', text: 'text of a.md', metadata: { lang: 'en' } },
      { collection: COLLECTION, documentId: 'b.md', text: 'text of b.md', metadata: null },
      { collection: COLLECTION, documentId: 'c.md', text: 'text of c.md', metadata: null },
    ]);
    assert.equal(await readyCount(s.ingest), 0);
  });

  test('at 100% legacy is never called', async (t) => {
    const s = scope(t, 'cut100');
    const legacy = recorder();
    const legacyDelete = recorder();
    const producer = await s.producer({ cutoverPercent: 100, legacy, legacyDelete });
    const ids = await producer.enqueueMany(IDS.slice(0, 200).map((id) => upsert(id)));
    ids.push(await producer.delete({ collection: COLLECTION, documentId: IDS[0] }));
    assert.ok(ids.every(isJobId), 'job ids only');
    assert.equal(legacy.calls.length + legacyDelete.calls.length, 0);
    assert.equal(await readyCount(s.ingest), 201);
  });

  test('mixed enqueueMany: results in input order, only the Quern share is published', async (t) => {
    const s = scope(t, 'mixed');
    const legacy = recorder();
    const legacyDelete = recorder((doc) => `deleted:${doc.documentId}`);
    const producer = await s.producer({ cutoverPercent: 30, legacy, legacyDelete });
    const ids = IDS.slice(0, 300);
    const jobs = ids.map((id, i) => (i % 3 === 2 ? remove(id) : upsert(id)));

    const results = await producer.enqueueMany(jobs);
    assert.equal(results.length, jobs.length);
    const published = [];
    jobs.forEach((job, i) => {
      if (goesToQuern(COLLECTION, job.documentId, 30)) {
        assert.ok(isJobId(results[i]), `${i}: ${results[i]}`);
        published.push(results[i]);
      } else {
        assert.equal(results[i], `${job.op === 'delete' ? 'deleted' : 'legacy'}:${job.documentId}`, `${i}`);
      }
    });
    assert.ok(published.length > 40 && published.length < 150, `${published.length} of 300 to Quern`);
    assert.equal(await readyCount(s.ingest), published.length);
    const messages = await drain(s.ingest);
    assert.deepEqual(
      messages.map((m) => m.properties.messageId),
      published,
      'the Quern share, in order',
    );
    // The legacy path got the rest, in input order.
    const legacySide = jobs.filter((job) => !goesToQuern(COLLECTION, job.documentId, 30));
    assert.deepEqual(
      legacy.calls.map((c) => c.documentId),
      legacySide.filter((job) => job.op !== 'delete').map((job) => job.documentId),
    );
    assert.deepEqual(
      legacyDelete.calls,
      legacySide.filter((job) => job.op === 'delete').map(({ collection, documentId }) => ({ collection, documentId })),
    );
  });

  test('legacy calls are made one at a time, in order, after the Quern share is confirmed', async (t) => {
    const s = scope(t, 'order');
    const events = [];
    const legacy = async (job) => {
      events.push(`start ${job.documentId}`);
      // The Quern share was published and confirmed before any legacy call.
      events.push(`queued ${await readyCount(s.ingest)}`);
      await new Promise((resolve) => setTimeout(resolve, 5));
      events.push(`end ${job.documentId}`);
      return job.documentId;
    };
    const legacyDelete = async (doc) => {
      events.push(`delete ${doc.documentId}`);
      return 'gone';
    };
    const producer = await s.producer({ cutoverPercent: 50, legacy, legacyDelete });
    const [quern] = idsWhere((b) => b < 5_000);
    const [old1, old2] = idsWhere((b) => b >= 5_000, 2);
    const results = await producer.enqueueMany([upsert(old1), upsert(quern), upsert(old2), remove(old1)]);
    assert.deepEqual([results[0], results[2], results[3]], [old1, old2, 'gone']);
    assert.ok(isJobId(results[1]));
    assert.deepEqual(events, [
      `start ${old1}`,
      'queued 1',
      `end ${old1}`,
      `start ${old2}`,
      'queued 1',
      `end ${old2}`,
      `delete ${old1}`,
    ]);
  });

  test('the same document goes the same way on repeat calls and from a second producer', async (t) => {
    const s = scope(t, 'sticky');
    const legacy = recorder(() => 'legacy');
    const first = await s.producer({ cutoverPercent: 30, legacy });
    const second = await s.producer({ cutoverPercent: 30, legacy });
    const ids = IDS.slice(0, 100);
    const route = (result) => (isJobId(result) ? 'quern' : result);
    const runs = [
      await first.enqueueMany(ids.map((id) => upsert(id))),
      await first.enqueueMany(ids.map((id) => upsert(id))),
      await second.enqueueMany(ids.map((id) => upsert(id))),
      await Promise.all(ids.map((id) => second.enqueue(upsert(id)))),
    ].map((results) => results.map(route));
    for (const run of runs.slice(1)) assert.deepEqual(run, runs[0]);
    assert.deepEqual(
      runs[0],
      ids.map((id) => (goesToQuern(COLLECTION, id, 30) ? 'quern' : 'legacy')),
    );
  });

  test('an invalid job at any position calls no legacy function and publishes nothing', async (t) => {
    const s = scope(t, 'invalid');
    const legacy = recorder();
    const legacyDelete = recorder();
    const producer = await s.producer({ cutoverPercent: 50, legacy, legacyDelete });
    const [quern] = idsWhere((b) => b < 5_000);
    const [old] = idsWhere((b) => b >= 5_000);
    const valid = [upsert(quern), upsert(old), remove(old), remove(quern)];
    const invalid = [
      [{ collection: COLLECTION, documentId: old }, 'text'],
      [upsert(''), 'document_id'],
      [upsert(old, { metadata: [1] }), 'metadata'],
      [upsert(old, { jobId: 'not-a-uuid' }), 'job_id'],
      [{ collection: 'x'.repeat(129), documentId: old, op: 'delete' }, 'collection'],
    ];
    for (const [bad, field] of invalid) {
      for (let position = 0; position <= valid.length; position++) {
        const jobs = [...valid.slice(0, position), bad, ...valid.slice(position)];
        const where = `${field} at ${position}`;
        await assert.rejects(producer.enqueueMany(jobs), { name: 'InvalidJobError', field }, where);
      }
      await assert.rejects(producer.enqueue(bad), InvalidJobError, `${field} alone`);
    }
    assert.equal(legacy.calls.length + legacyDelete.calls.length, 0, 'no legacy call');
    // Confirms come in order: once this one is confirmed, anything published before it would be counted.
    await producer.enqueue(upsert(quern));
    assert.equal(await readyCount(s.ingest), 1, 'only the sentinel reached the queue');
  });

  test('delete routing: legacyDelete for the legacy side; without it, a rejection and nothing sent', async (t) => {
    const s = scope(t, 'delete');
    const [quern] = idsWhere((b) => b < 3_000);
    const [old] = idsWhere((b) => b >= 3_000);

    const legacyDelete = recorder(() => ({ deleted: true }));
    const withDelete = await s.producer({ cutoverPercent: 30, legacy: recorder(), legacyDelete });
    assert.deepEqual(await withDelete.delete({ collection: COLLECTION, documentId: old }), { deleted: true });
    assert.deepEqual(legacyDelete.calls, [{ collection: COLLECTION, documentId: old }]);
    assert.ok(isJobId(await withDelete.delete({ collection: COLLECTION, documentId: quern })));
    assert.equal(legacyDelete.calls.length, 1);

    const legacy = recorder();
    const without = await s.producer({ cutoverPercent: 30, legacy });
    assert.ok(isJobId(await without.delete({ collection: COLLECTION, documentId: quern })), 'the Quern side deletes');
    await assert.rejects(without.delete({ collection: COLLECTION, documentId: old }), (error) => {
      assert.match(error.message, /legacy path at cutoverPercent 30%/);
      assert.match(error.message, /pass legacyDelete/);
      assert.ok(error.message.includes(JSON.stringify(old)), error.message);
      return true;
    });
    // In a batch, the route is checked with the jobs: nothing is published or handed over.
    await assert.rejects(without.enqueueMany([upsert(quern), upsert(old), remove(old)]), /pass legacyDelete/);
    assert.equal(legacy.calls.length, 0);
    assert.equal(await readyCount(s.ingest), 2, 'the two Quern-side deletes only');
  });

  test('a bad cutoverPercent or a missing legacy is refused at connect, naming the option', async () => {
    // A closed port: the options must be refused before any attempt to connect.
    const url = viaPort(await freePort());
    const connect = (options) => Producer.connect(url, { queuePrefix: testPrefix('options'), ...options });
    const legacy = () => 'legacy';
    for (const bad of [-1, -0.001, 100.01, 1e9, Number.NaN, Number.POSITIVE_INFINITY, '50', null, true, {}]) {
      await assert.rejects(
        connect({ cutoverPercent: bad, legacy }),
        { name: 'RangeError', message: /^cutoverPercent must be a number from 0 to 100/ },
        String(bad),
      );
    }
    for (const percent of [0, 30, 99.99]) {
      await assert.rejects(connect({ cutoverPercent: percent }), { name: 'TypeError', message: /pass legacy/ });
      await assert.rejects(connect({ cutoverPercent: percent, legacy: null }), /pass legacy/);
    }
    await assert.rejects(connect({ cutoverPercent: 50, legacy: 'celery.delay' }), {
      name: 'TypeError',
      message: /^legacy must be a function/,
    });
    await assert.rejects(connect({ legacy, legacyDelete: {} }), {
      name: 'TypeError',
      message: /^legacyDelete must be a function/,
    });
    // Valid options get as far as connecting, which then fails on the closed port.
    for (const options of [{}, { cutoverPercent: 100 }, { cutoverPercent: 0, legacy }, { legacy: null }]) {
      await assert.rejects(connect(options), { name: 'BrokerError', code: 'CONNECT' }, JSON.stringify(options));
    }
  });

  test('setCutoverPercent(0) rolls back at once; raising it moves only the documents in between', async (t) => {
    const s = scope(t, 'rollback');
    const legacy = recorder(() => 'legacy');
    const producer = await s.producer({ cutoverPercent: 50, legacy });
    const ids = IDS.slice(0, 200);
    const routes = async () => (await producer.enqueueMany(ids.map((id) => upsert(id)))).map(isJobId);
    const expected = (percent) => ids.map((id) => goesToQuern(COLLECTION, id, percent));

    assert.deepEqual(await routes(), expected(50));
    producer.setCutoverPercent(0);
    assert.equal(producer.cutoverPercent, 0);
    assert.deepEqual(await routes(), expected(0), 'every document back on the legacy path');
    assert.ok(expected(0).every((q) => !q));

    const before = await readyCount(s.ingest);
    producer.setCutoverPercent(30);
    const at30 = await routes();
    producer.setCutoverPercent(50);
    const at50 = await routes();
    assert.deepEqual(at30, expected(30));
    assert.deepEqual(at50, expected(50));
    ids.forEach((id, i) => {
      const bucket = cutoverBucket(COLLECTION, id);
      assert.equal(at50[i] && !at30[i], bucket >= 3_000 && bucket < 5_000, id);
    });
    const published = [...at30, ...at50].filter(Boolean).length;
    assert.equal(await readyCount(s.ingest), before + published);

    // Checked as at connect, and a refused value changes nothing.
    for (const bad of [-5, 101, Number.NaN, '10']) {
      assert.throws(() => producer.setCutoverPercent(bad), { name: 'RangeError', message: /cutoverPercent/ });
    }
    assert.equal(producer.cutoverPercent, 50);
    assert.throws(() => {
      producer.cutoverPercent = 10;
    }, TypeError);

    // A producer without legacy stays at 100%.
    const plain = await s.producer();
    assert.equal(plain.cutoverPercent, 100);
    plain.setCutoverPercent(100);
    assert.throws(() => plain.setCutoverPercent(0), { name: 'TypeError', message: /pass legacy/ });
    assert.equal(plain.cutoverPercent, 100);
  });

  test('a legacy function that fails rejects the call; the Quern share is already confirmed', async (t) => {
    const s = scope(t, 'legacyfails');
    const legacy = async () => {
      throw new Error('the Celery broker is down');
    };
    const producer = await s.producer({ cutoverPercent: 50, legacy });
    const [quern] = idsWhere((b) => b < 5_000);
    const [old] = idsWhere((b) => b >= 5_000);
    await assert.rejects(producer.enqueueMany([upsert(quern), upsert(old)]), /the Celery broker is down/);
    assert.equal(await readyCount(s.ingest), 1);
    const throwsAtOnce = await s.producer({
      cutoverPercent: 50,
      legacy: () => {
        throw new Error('synchronous');
      },
    });
    await assert.rejects(throwsAtOnce.enqueue(upsert(old)), /synchronous/, 'a synchronous throw rejects too');
  });

  test('after close(), legacy-side calls fail with CLOSED as Quern-side ones do', async (t) => {
    const s = scope(t, 'closed');
    const legacy = recorder();
    const producer = await s.producer({ cutoverPercent: 0, legacy });
    const inFlight = producer.enqueue(upsert('a.md'));
    await producer.close();
    assert.equal(await inFlight, 'legacy:a.md', 'handed over before close: not dropped');
    await assert.rejects(producer.enqueue(upsert('b.md')), (error) => {
      assert.ok(error instanceof BrokerError);
      assert.equal(error.code, 'CLOSED');
      return true;
    });
    assert.equal(legacy.calls.length, 1);
  });
});
