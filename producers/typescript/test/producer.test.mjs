// The producer against the real RabbitMQ (no worker): what a message carries, validation before anything is
// published (the shared examples again, through enqueue), every way the broker can fail to take a job (down,
// connection lost with confirms pending, no confirm in time, nacked, unroutable, a queue declared otherwise)
// giving an error and never a job id, and reconnecting on the next call.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { promisify } from 'node:util';

import { context, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';

import { BrokerError, InvalidJobError, Producer, isTraceparent, jobIdTime, validateJob } from '@quern/producer';

import {
  AMQP_URL,
  BrokerProxy,
  REPO_ROOT,
  deleteTopology,
  drain,
  freePort,
  readyCount,
  testPrefix,
  viaPort,
  withChannel,
} from './harness.mjs';

/** A fresh prefix for one test, its queues deleted and its producers closed when the test ends. */
function scope(t, label) {
  const prefix = testPrefix(label);
  const producers = [];
  const proxies = [];
  t.after(async () => {
    for (const producer of producers) await producer.close();
    for (const proxy of proxies) await proxy.cut();
    await deleteTopology(prefix);
  });
  return {
    prefix,
    ingest: `${prefix}.ingest`,
    async producer(options = {}, url = AMQP_URL) {
      const producer = await Producer.connect(url, { queuePrefix: prefix, ...options });
      producers.push(producer);
      return producer;
    },
    async proxy() {
      const proxy = await new BrokerProxy().start();
      proxies.push(proxy);
      return proxy;
    },
  };
}

const examples = (file) => JSON.parse(readFileSync(join(REPO_ROOT, 'schema', 'examples', file), 'utf8'));

/** A wire body of the examples as the caller's input: the same fields, camelCase, only those present. */
function toInput(body) {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return body;
  const names = {
    job_id: 'jobId',
    collection: 'collection',
    document_id: 'documentId',
    text: 'text',
    metadata: 'metadata',
    op: 'op',
  };
  return Object.fromEntries(
    Object.entries(names)
      .filter(([wire]) => wire in body)
      .map(([wire, name]) => [name, body[wire]]),
  );
}

const run = promisify(execFile);
const job = (i) => ({ collection: 'c', documentId: `doc-${i}`, text: `text ${i}` });

describe('what is published', () => {
  test('properties, headers and body match the Rust producer and the contract', async (t) => {
    const s = scope(t, 'props');
    const producer = await s.producer();
    const before = Math.floor(Date.now() / 1000);
    const upsertId = await producer.enqueue({ ...job(1), metadata: { lang: 'en', tags: ['a'] } });
    const deleteId = await producer.delete({ collection: 'c', documentId: 'doc-1' });
    const [upsert, del] = await drain(s.ingest);

    assert.deepEqual(JSON.parse(upsert.content.toString()), {
      job_id: upsertId,
      collection: 'c',
      document_id: 'doc-1',
      text: 'text 1',
      metadata: { lang: 'en', tags: ['a'] },
    });
    assert.deepEqual(JSON.parse(del.content.toString()), {
      job_id: deleteId,
      collection: 'c',
      document_id: 'doc-1',
      op: 'delete',
    });
    for (const [message, id] of [
      [upsert, upsertId],
      [del, deleteId],
    ]) {
      const p = message.properties;
      assert.equal(p.contentType, 'application/json');
      assert.equal(p.deliveryMode, 2, 'persistent');
      assert.equal(p.messageId, id);
      assert.equal(p.appId, 'quern-producer');
      assert.ok(p.timestamp >= before && p.timestamp <= Date.now() / 1000 + 1, `timestamp ${p.timestamp} in seconds`);
      assert.equal(p.headers['quern-contract'], 1);
      assert.ok(isTraceparent(p.headers.traceparent), p.headers.traceparent);
      assert.equal(message.fields.exchange, s.prefix);
      assert.equal(message.fields.routingKey, 'ingest');
      validateJob(JSON.parse(message.content.toString()));
    }
    assert.notEqual(upsert.properties.headers.traceparent, del.properties.headers.traceparent, 'a new trace per job');
    assert.ok(jobIdTime(upsertId) <= jobIdTime(deleteId) && upsertId < deleteId, 'the later job has the later id');
  });

  test("traceparent: the caller's, else the active OpenTelemetry span's, else a fresh root", async (t) => {
    const s = scope(t, 'trace');
    const producer = await s.producer();
    const given = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
    await producer.enqueue(job(1), { traceparent: given });
    await producer.enqueue(job(2), { traceparent: 'garbage' });
    const manager = new AsyncLocalStorageContextManager().enable();
    context.setGlobalContextManager(manager);
    t.after(() => context.disable());
    const span = trace.wrapSpanContext({ traceId: 'a'.repeat(32), spanId: 'b'.repeat(16), traceFlags: 1 });
    await context.with(trace.setSpan(context.active(), span), async () => {
      await producer.enqueue(job(3));
      await producer.enqueue(job(4), { traceparent: given });
    });
    const headers = (await drain(s.ingest)).map((m) => m.properties.headers.traceparent);
    assert.equal(headers[0], given);
    assert.ok(isTraceparent(headers[1]) && headers[1] !== 'garbage', 'an invalid value is replaced by a root');
    assert.equal(headers[2], `00-${'a'.repeat(32)}-${'b'.repeat(16)}-01`);
    assert.equal(headers[3], given, 'an explicit traceparent wins over the active span');
  });

  test('enqueueMany: ids in order, one message each, in order', async (t) => {
    const s = scope(t, 'many');
    const producer = await s.producer();
    const jobs = Array.from({ length: 300 }, (_, i) => job(i));
    const ids = await producer.enqueueMany(jobs);
    assert.equal(ids.length, 300);
    assert.deepEqual([...ids].sort(), ids, 'time-ordered ids');
    const messages = await drain(s.ingest);
    assert.deepEqual(
      messages.map((m) => m.properties.messageId),
      ids,
    );
    assert.deepEqual(await producer.enqueueMany([]), []);
  });

  test('concurrent calls share the producer', async (t) => {
    const s = scope(t, 'concurrent');
    const producer = await s.producer();
    const ids = await Promise.all(Array.from({ length: 100 }, (_, i) => producer.enqueue(job(i))));
    assert.equal(new Set(ids).size, 100);
    assert.equal(await readyCount(s.ingest), 100);
  });

  test('a caller-chosen job id is kept (lower-cased, as the worker records it)', async (t) => {
    const s = scope(t, 'jobid');
    const producer = await s.producer();
    const id = await producer.enqueue({ ...job(1), jobId: '0190A5C2-7A3E-7CC1-9F3B-2D1F0E6B8A11' });
    assert.equal(id, '0190a5c2-7a3e-7cc1-9f3b-2d1f0e6b8a11');
    const [message] = await drain(s.ingest);
    assert.equal(message.properties.messageId, id);
  });
});

describe('the shared examples through enqueue', () => {
  test('every accepted example is published', async (t) => {
    const s = scope(t, 'accepted');
    const producer = await s.producer();
    const accepted = examples('accepted.json');
    await producer.enqueueMany(accepted.map(({ body }) => toInput(body)));
    const messages = await drain(s.ingest);
    assert.equal(messages.length, accepted.length);
    messages.forEach((message, i) => {
      const { name, body } = accepted[i];
      const published = validateJob(JSON.parse(message.content.toString()));
      assert.equal(published.job_id, body.job_id.toLowerCase(), name);
      assert.equal(published.collection, body.collection, name);
      assert.equal(published.document_id, body.document_id, name);
      assert.equal(published.op ?? 'upsert', body.op ?? 'upsert', name);
    });
  });

  test('a rejected example is refused before anything is published', async (t) => {
    const s = scope(t, 'rejected');
    const producer = await s.producer();
    let refused = 0;
    for (const { name, body } of examples('rejected.json')) {
      // The producer supplies job_id when the caller does not: a body whose only fault is a missing job_id
      // is not the caller's fault here, and the same body with an id is what enqueue must refuse.
      const withId =
        typeof body === 'object' && body !== null && !Array.isArray(body) && !('job_id' in body)
          ? { job_id: '0190a5c2-7a3e-7cc1-9f3b-2d1f0e6b8a11', ...body }
          : body;
      let expected;
      try {
        validateJob(structuredClone(withId));
        continue; // "missing job_id": fine once the producer adds one.
      } catch (error) {
        expected = error.field;
      }
      await assert.rejects(producer.enqueue(toInput(body)), (error) => {
        assert.ok(error instanceof InvalidJobError, `${name}: ${error}`);
        assert.equal(error.field, expected, `${name}: ${error.message}`);
        return true;
      });
      await assert.rejects(producer.enqueueMany([job(1), toInput(body)]), InvalidJobError, `${name} in a batch`);
      refused++;
    }
    assert.ok(refused >= examples('rejected.json').length - 1);
    // Confirms come in order: once this one is confirmed, anything published before it would be counted.
    await producer.enqueue(job('sentinel'));
    assert.equal(await readyCount(s.ingest), 1, 'only the valid job reached the queue');
  });

  test('malformed calls are refused too', async (t) => {
    const s = scope(t, 'malformed');
    const producer = await s.producer();
    for (const bad of [undefined, null, 'text', [], { collection: 'c', documentId: 'd', text: 't', metadata: [1] }]) {
      await assert.rejects(producer.enqueue(bad), InvalidJobError, String(bad));
    }
    await assert.rejects(producer.delete({ collection: 'c' }), { name: 'InvalidJobError', field: 'document_id' });
    await assert.rejects(producer.enqueueMany('not an array'), TypeError);
    assert.equal(await readyCount(s.ingest), 0);
  });
});

describe('when the broker does not take a job', () => {
  test('a broker that is down (a closed port) rejects connect, with the password hidden', async () => {
    const port = await freePort();
    await assert.rejects(Producer.connect(viaPort(port), { queuePrefix: testPrefix('down') }), (error) => {
      assert.ok(error instanceof BrokerError);
      assert.equal(error.code, 'CONNECT');
      assert.match(error.message, /ECONNREFUSED/);
      assert.doesNotMatch(error.message, /guest:guest/);
      return true;
    });
  });

  test('a lost connection fails the call; the next call reconnects', async (t) => {
    const s = scope(t, 'reconnect');
    const proxy = await s.proxy();
    const producer = await s.producer({}, proxy.url);
    await producer.enqueue(job(1));

    await proxy.cut();
    // Down: the broker is unreachable, so each call fails with an error, never a job id.
    await assert.rejects(
      producer.enqueue(job(2)),
      (error) => error instanceof BrokerError && /CONNECT|CONNECTION_LOST/.test(error.code),
    );
    await assert.rejects(producer.enqueue(job(3)), { name: 'BrokerError', code: 'CONNECT' });

    await proxy.start();
    const id = await producer.enqueue(job(4));
    const ids = (await drain(s.ingest)).map((m) => m.properties.messageId);
    assert.equal(ids.length, 2);
    assert.equal(ids[1], id);
  });

  test('a connection lost while confirms are pending fails those calls, naming the unconfirmed jobs', async (t) => {
    const s = scope(t, 'pending');
    const proxy = await s.proxy();
    const producer = await s.producer({}, proxy.url);
    proxy.hold(); // the broker's confirms no longer reach the producer
    const pending = producer.enqueueMany([job(1), job(2)]);
    setTimeout(() => proxy.cut(), 300);
    await assert.rejects(pending, (error) => {
      assert.ok(error instanceof BrokerError);
      assert.equal(error.code, 'CONNECTION_LOST');
      assert.equal(error.unconfirmedJobIds.length, 2);
      return true;
    });
    // Unconfirmed is not lost: the broker did get them, which is why resending with the same ids is the rule.
    assert.equal(await readyCount(s.ingest), 2);
    await proxy.start();
    await producer.enqueue(job(3));
  });

  test('no confirm within confirmTimeoutMs rejects, and the next call starts afresh', async (t) => {
    const s = scope(t, 'timeout');
    const proxy = await s.proxy();
    const producer = await s.producer({ confirmTimeoutMs: 500 }, proxy.url);
    proxy.hold();
    const started = Date.now();
    await assert.rejects(producer.enqueue(job(1)), { name: 'BrokerError', code: 'CONFIRM_TIMEOUT' });
    assert.ok(Date.now() - started < 5000);
    await proxy.cut();
    await proxy.start();
    await producer.enqueue(job(2));
    assert.equal(await readyCount(s.ingest), 2);
  });

  test('a full queue (x-overflow reject-publish) nacks, and the call rejects', async (t) => {
    const s = scope(t, 'nack');
    const producer = await s.producer();
    // Queue arguments are frozen, so the limit comes from a policy, set with rabbitmqctl when this machine has
    // the broker's own CLI (scripts/services.sh installs RabbitMQ locally; a broker given from outside may not).
    const policy = `${s.prefix}-full`;
    try {
      await run('rabbitmqctl', [
        'set_policy',
        '--apply-to',
        'queues',
        policy,
        `^${s.prefix}\\.ingest$`,
        '{"max-length":1}',
      ]);
    } catch (error) {
      t.skip(`rabbitmqctl cannot set a policy here: ${error.message.split('\n')[0]}`);
      return;
    }
    t.after(() => run('rabbitmqctl', ['clear_policy', policy]).catch(() => {}));
    const outcomes = [];
    for (let i = 0; i < 6; i++) {
      outcomes.push(
        await producer.enqueue(job(i)).then(
          () => 'ok',
          (error) => error,
        ),
      );
    }
    const nacked = outcomes.filter((o) => o instanceof BrokerError && o.code === 'NACKED');
    assert.ok(nacked.length > 0, `some publish is refused: ${outcomes}`);
    assert.equal(nacked[0].unconfirmedJobIds.length, 1);
    assert.ok(
      outcomes.every((o) => o === 'ok' || nacked.includes(o)),
      `${outcomes}`,
    );
    // The channel survives a nack: once the queue has room, the same producer publishes again.
    await drain(s.ingest);
    await producer.enqueue(job('after'));
  });

  test('an unroutable job (no queue bound) is returned and rejected', async (t) => {
    const s = scope(t, 'unroutable');
    const producer = await s.producer();
    await withChannel((channel) => channel.unbindQueue(s.ingest, s.prefix, 'ingest'));
    await assert.rejects(producer.enqueue(job(1)), (error) => {
      assert.ok(error instanceof BrokerError);
      assert.equal(error.code, 'UNROUTABLE');
      assert.match(error.message, /NO_ROUTE/);
      return true;
    });
    await withChannel((channel) => channel.bindQueue(s.ingest, s.prefix, 'ingest'));
    await producer.enqueue(job(2));
    assert.equal(await readyCount(s.ingest), 1);
  });

  test('a queue declared with other arguments is refused loudly (PRECONDITION_FAILED)', async (t) => {
    const s = scope(t, 'precondition');
    await withChannel((channel) =>
      channel.assertQueue(s.ingest, { durable: true, arguments: { 'x-queue-type': 'classic' } }),
    );
    await assert.rejects(s.producer(), (error) => {
      assert.ok(error instanceof BrokerError);
      assert.equal(error.code, 'CONNECT');
      assert.match(error.message, /PRECONDITION_FAILED/);
      return true;
    });
  });

  test('after close(), calls fail with CLOSED; close() twice is fine', async (t) => {
    const s = scope(t, 'close');
    const producer = await s.producer();
    const inFlight = producer.enqueue(job(1));
    await producer.close();
    await inFlight; // published before close: confirmed, not dropped
    await assert.rejects(producer.enqueue(job(2)), { name: 'BrokerError', code: 'CLOSED' });
    await producer.close();
    assert.equal(await readyCount(s.ingest), 1);
  });
});
