// amqps:// with RabbitMQ's TLS query parameters (cacertfile, certfile, keyfile, verify, server_name_indication),
// against a node of its own with a TLS listener and a CA made for the run: a job goes through with the right CA
// and is read back, a wrong CA or a refused client certificate fails with a message that says so, and bad
// settings are TypeErrors naming the parameter.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { BrokerError, Producer } from '@quern/producer';

import { describeTlsError } from '../dist/tls.js';
import { startTlsBroker, testPrefix } from './harness.mjs';

describe('amqps://', () => {
  let broker;
  before(async () => {
    broker = await startTlsBroker();
  });
  after(async () => {
    await broker?.stop();
  });

  /** Connects, enqueues one job, closes; resolves to the job id. */
  async function enqueueOne(url, prefix) {
    const producer = await Producer.connect(url, { queuePrefix: prefix });
    try {
      return await producer.enqueue({ collection: 'articles', documentId: 'tls.md', text: 'sent over TLS' });
    } finally {
      await producer.close();
    }
  }

  test('a job enqueued with the CA and a client certificate is in the queue', async () => {
    const prefix = testPrefix('tls');
    const url = broker.url({
      cacertfile: broker.file('ca.pem'),
      certfile: broker.file('client.pem'),
      keyfile: broker.file('client.key'),
    });
    const jobId = await enqueueOne(url, prefix);
    const [message, ...rest] = await broker.drain(`${prefix}.ingest`);
    assert.equal(rest.length, 0);
    assert.equal(message.properties.messageId, jobId);
    assert.equal(JSON.parse(message.content.toString()).text, 'sent over TLS');
  });

  test('an IP address is checked against the name given', async () => {
    const prefix = testPrefix('tls');
    const url = broker
      .url({ cacertfile: broker.file('ca.pem'), server_name_indication: 'localhost' })
      .replace('@localhost:', '@127.0.0.1:');
    const jobId = await enqueueOne(url, prefix);
    assert.deepEqual(
      (await broker.drain(`${prefix}.ingest`)).map((m) => m.properties.messageId),
      [jobId],
    );
    const wrongName = broker
      .url({ cacertfile: broker.file('ca.pem'), server_name_indication: 'mq.example.com' })
      .replace('@localhost:', '@127.0.0.1:');
    await assert.rejects(
      Producer.connect(wrongName, { queuePrefix: prefix }),
      /TLS failed: the broker's certificate was refused: Hostname\/IP does not match certificate's altnames: Host: mq\.example\.com/,
    );
  });

  test('a wrong CA is refused with a clear message', async () => {
    const url = broker.url({ cacertfile: broker.file('other-ca.pem') });
    await assert.rejects(Producer.connect(url, { queuePrefix: testPrefix('tls') }), (error) => {
      assert.ok(error instanceof BrokerError);
      assert.equal(error.code, 'CONNECT');
      assert.match(
        error.message,
        /TLS failed: the broker's certificate was refused: self[- ]signed certificate in certificate chain/,
      );
      assert.doesNotMatch(error.message, /guest:guest/);
      return true;
    });
  });

  test('a client certificate the broker does not trust is refused', async () => {
    const url = broker.url({
      cacertfile: broker.file('ca.pem'),
      certfile: broker.file('other-client.pem'),
      keyfile: broker.file('other-client.key'),
    });
    // Usually the broker's alert; sometimes (TLS 1.3: the alert races the first write) only a reset.
    await assert.rejects(
      Producer.connect(url, { queuePrefix: testPrefix('tls') }),
      /TLS failed: the broker (refused|closed) the connection.*client certificate/,
    );
  });

  test('verify_none takes any certificate', async () => {
    const prefix = testPrefix('tls');
    await enqueueOne(broker.url({ cacertfile: broker.file('other-ca.pem'), verify: 'verify_none' }), prefix);
    assert.equal((await broker.drain(`${prefix}.ingest`)).length, 1);
  });
});

describe('TLS settings', () => {
  test('a reset as a TLS connection opens asks about the client certificate', () => {
    const reset = Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' });
    assert.match(describeTlsError(reset, true), /does it want a client certificate \(certfile and keyfile\), or refuse/);
    assert.equal(describeTlsError(reset, false), undefined);
  });

  for (const [query, message] of [
    ['certfile=/c.pem', 'certfile is given without keyfile'],
    ['verify=yes', "verify must be verify_peer or verify_none, not 'yes'"],
    ['cacertfile=', 'cacertfile is empty'],
    ['cacertfile=/a&cacertfile=/b', 'cacertfile is given twice'],
    ['cacertfile=/nonexistent/ca.pem', 'cannot read cacertfile /nonexistent/ca.pem: no such file'],
    ['server_name_indication=disable', 'server_name_indication=disable is not supported'],
  ]) {
    test(`${query}: ${message}`, async () => {
      await assert.rejects(Producer.connect(`amqps://u:s3cret@127.0.0.1:1/%2f?${query}`), (error) => {
        assert.ok(error instanceof TypeError);
        assert.ok(error.message.includes(message), error.message);
        assert.ok(!error.message.includes('s3cret'), error.message);
        return true;
      });
    });
  }

  test('an amqp:// URL with TLS parameters is refused', async () => {
    await assert.rejects(
      Producer.connect('amqp://guest:guest@127.0.0.1:1/%2f?cacertfile=/ca.pem'),
      /cacertfile needs an amqps:\/\/ URL/,
    );
  });
});
