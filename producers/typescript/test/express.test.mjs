// The Express example (examples/express-app.mjs) run as a process on a free port, as a user would run it,
// talking to RabbitMQ through a proxy this test can cut: 202 with the job id once confirmed, 422 naming the
// field for bad input (and nothing published), 503 while the broker is away, 202 again once it is back.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { BrokerProxy, PACKAGE_DIR, deleteTopology, drain, readyCount, testPrefix, waitFor } from './harness.mjs';

const prefix = testPrefix('express');
const ingest = `${prefix}.ingest`;
let proxy;
let app;
let base;
let output = '';

before(async () => {
  proxy = await new BrokerProxy().start();
  app = spawn(process.execPath, [join(PACKAGE_DIR, 'examples', 'express-app.mjs')], {
    env: { ...process.env, QUERN_AMQP_URL: proxy.url, QUERN_QUEUE_PREFIX: prefix, PORT: '0' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  app.stdout.on('data', (chunk) => (output += chunk));
  app.stderr.on('data', (chunk) => (output += chunk));
  base = await waitFor(() => /listening on (http:\/\/\S+)/.exec(output)?.[1], 20_000);
  assert.ok(base, `the app starts:\n${output}`);
});

after(async () => {
  if (app.exitCode === null) app.kill('SIGKILL');
  await proxy.cut();
  await deleteTopology(prefix);
});

function post(body, headers = {}) {
  return fetch(`${base}/documents`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

describe('examples/express-app.mjs', () => {
  test('202 with the job id once the broker confirmed it', async () => {
    const traceparent = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
    const response = await post(
      { collection: 'articles', documentId: '2024/launch.md', text: 'We launched.', metadata: { lang: 'en' } },
      { traceparent },
    );
    assert.equal(response.status, 202);
    const { jobId } = await response.json();
    const [message] = await drain(ingest);
    assert.equal(message.properties.messageId, jobId);
    assert.equal(message.properties.headers.traceparent, traceparent);
    assert.deepEqual(JSON.parse(message.content.toString()), {
      job_id: jobId,
      collection: 'articles',
      document_id: '2024/launch.md',
      text: 'We launched.',
      metadata: { lang: 'en' },
    });
  });

  test('DELETE enqueues a delete job', async () => {
    const response = await fetch(`${base}/documents/articles/${encodeURIComponent('2024/launch.md')}`, {
      method: 'DELETE',
    });
    assert.equal(response.status, 202);
    const { jobId } = await response.json();
    const [message] = await drain(ingest);
    assert.deepEqual(JSON.parse(message.content.toString()), {
      job_id: jobId,
      collection: 'articles',
      document_id: '2024/launch.md',
      op: 'delete',
    });
  });

  test('422 naming the field for input the contract refuses; nothing published', async () => {
    for (const [body, field] of [
      [{ collection: 'articles', documentId: 'a' }, 'text'],
      [{ collection: '', documentId: 'a', text: 'x' }, 'collection'],
      [{ collection: 'articles', documentId: 'x'.repeat(513), text: 'x' }, 'document_id'],
      [{ collection: 'articles', documentId: 'a', text: 5 }, 'text'],
      [{ collection: 'articles', documentId: 'a', text: 'x', metadata: 'm' }, 'metadata'],
      ['{"collection": "articles",', null],
      [[1, 2], 'collection'],
    ]) {
      const response = await post(body);
      assert.equal(response.status, 422, JSON.stringify(body));
      assert.equal((await response.json()).field, field, JSON.stringify(body));
    }
    assert.equal(await readyCount(ingest), 0);
  });

  test('503 while the broker is unreachable, 202 again once it is back', async () => {
    await proxy.cut();
    for (let i = 0; i < 2; i++) {
      const response = await post({ collection: 'articles', documentId: 'b', text: 'x' });
      assert.equal(response.status, 503);
      assert.equal(response.headers.get('retry-after'), '5');
    }
    await proxy.start();
    const response = await post({ collection: 'articles', documentId: 'b', text: 'x' });
    assert.equal(response.status, 202, output);
    assert.equal(await readyCount(ingest), 1);
  });

  test('SIGTERM: the app closes its producer and exits 0', async () => {
    const exited = new Promise((resolve) => app.once('exit', resolve));
    app.kill('SIGTERM');
    assert.equal(await exited, 0, output);
  });
});
