// Shared set-up for the tests, against the real services: the URLs from QUERN_TEST_AMQP_URL and
// QUERN_TEST_DATABASE_URL, a queue prefix and a database of each test's own, the Rust fake embedder and worker
// binaries from target/debug, and a TCP proxy in front of RabbitMQ that a test can cut to play a broker outage.

import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import amqp from 'amqplib';
import pg from 'pg';

const execFileAsync = promisify(execFile);

export const PACKAGE_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const REPO_ROOT = resolve(PACKAGE_DIR, '../..');
export const AMQP_URL = process.env.QUERN_TEST_AMQP_URL || 'amqp://guest:guest@127.0.0.1:5672/%2f';
export const ADMIN_DATABASE_URL =
  process.env.QUERN_TEST_DATABASE_URL || 'postgresql://postgres@127.0.0.1:5433/postgres';
/** The Rust tests' embedding dimension (crates/quern-testkit): small vectors, cheap to store. */
export const TEST_DIM = 64;
/** Retry tiers the test workers use, so retries are quick; cleanup deletes their delay queues. */
const TEST_RETRY_TIERS = ['100ms', '200ms'];
const DEFAULT_RETRY_TIERS = ['1s', '10s', '60s', '300s'];

/** `<label>_<12 hex>`: a name no other run uses. */
export function uniqueName(label) {
  return `${label}_${randomBytes(6).toString('hex')}`;
}

/** A queue prefix of the test's own, so tests never see each other's jobs. */
export function testPrefix(label) {
  return uniqueName(`qt_ts_${label}`);
}

/** Runs `fn` with a channel on a connection of its own, closed afterwards. */
export async function withChannel(fn) {
  const connection = await amqp.connect(AMQP_URL);
  // amqplib throws 'error' events nobody listens to out of the event loop; the rejected call says enough.
  connection.on('error', () => {});
  try {
    const channel = await connection.createChannel();
    channel.on('error', () => {});
    return await fn(channel);
  } finally {
    await connection.close().catch(() => {});
  }
}

/** Messages ready in `queue`; throws when the queue does not exist. */
export function readyCount(queue) {
  return withChannel(async (channel) => (await channel.checkQueue(queue)).messageCount);
}

/** Whether `queue` exists (a passive declare on a channel of its own, since a miss closes the channel). */
export async function queueExists(queue) {
  try {
    await withChannel((channel) => channel.checkQueue(queue));
    return true;
  } catch {
    return false;
  }
}

/** Takes every ready message off `queue` (acked), for tests that inspect what was published. */
export function drain(queue) {
  return withChannel(async (channel) => {
    const messages = [];
    for (;;) {
      const message = await channel.get(queue, { noAck: true });
      if (message === false) return messages;
      messages.push(message);
    }
  });
}

/**
 * A throwaway RabbitMQ node with a TLS listener and a CA made for it (scripts/rabbitmq-tls.sh), read back
 * through amqplib's own TLS options (not the producer's reading of the URL). `stop()` ends it; so does the
 * script's watchdog once this process is gone.
 */
export async function startTlsBroker() {
  const script = join(REPO_ROOT, 'scripts', 'rabbitmq-tls.sh');
  const dir = join(tmpdir(), uniqueName('quern-tls-ts'));
  const { stdout } = await execFileAsync('bash', [script, 'start', dir, String(process.pid)], { timeout: 120_000 });
  const settings = Object.fromEntries(
    stdout
      .split('\n')
      .filter((line) => line.includes('='))
      .map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]),
  );
  const port = Number(settings.QUERN_TLS_PORT);
  const tls = settings.QUERN_TLS_DIR;
  const file = (name) => join(tls, name);
  const base = `amqps://guest:guest@localhost:${port}/%2f`;
  return {
    port,
    file,
    /** The node's URL with these query parameters, e.g. `{ cacertfile: broker.file('ca.pem') }`. */
    url(query = {}) {
      const search = new URLSearchParams(query).toString();
      return search ? `${base}?${search}` : base;
    },
    /** Takes every ready message off `queue`. */
    async drain(queue) {
      const connection = await amqp.connect(base, { ca: readFileSync(file('ca.pem')), servername: 'localhost' });
      connection.on('error', () => {});
      try {
        const channel = await connection.createChannel();
        const messages = [];
        for (;;) {
          const message = await channel.get(queue, { noAck: true });
          if (message === false) return messages;
          messages.push(message);
        }
      } finally {
        await connection.close().catch(() => {});
      }
    },
    stop: () => execFileAsync('bash', [script, 'stop', dir], { timeout: 60_000 }),
  };
}

/** Deletes the queues and exchanges of a prefix, retry delay queues included; never throws. */
export async function deleteTopology(prefix) {
  const queues = [
    `${prefix}.ingest`,
    `${prefix}.dead`,
    ...[...TEST_RETRY_TIERS, ...DEFAULT_RETRY_TIERS].map((t) => `${prefix}.retry.${t}`),
  ];
  await withChannel(async (channel) => {
    // Deleting a queue or exchange that does not exist succeeds in RabbitMQ, so one channel does for all.
    for (const queue of queues) await channel.deleteQueue(queue);
    for (const exchange of [prefix, `${prefix}.dead`]) await channel.deleteExchange(exchange);
  }).catch(() => {});
}

/** The admin URL with another database name, keeping any query string. */
function databaseUrl(name) {
  const url = new URL(ADMIN_DATABASE_URL);
  url.pathname = `/${name}`;
  return url.toString();
}

/** A fresh, empty database (the worker migrates it with --migrate); `drop()` removes it. */
export async function createDatabase() {
  const name = uniqueName('quern_ts_test');
  const admin = new pg.Client({ connectionString: ADMIN_DATABASE_URL });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE "${name}"`);
  } finally {
    await admin.end();
  }
  const url = databaseUrl(name);
  return {
    url,
    name,
    /** Runs one query on the test database. */
    async query(text, values) {
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      try {
        return await client.query(text, values);
      } finally {
        await client.end();
      }
    },
    async drop() {
      const client = new pg.Client({ connectionString: ADMIN_DATABASE_URL });
      await client.connect();
      try {
        await client.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
      } finally {
        await client.end();
      }
    },
  };
}

/** Polls `check` every 100 ms until it returns a truthy value or `timeoutMs` passes; returns the last value. */
export async function waitFor(check, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let value;
    try {
      value = await check();
    } catch {
      value = undefined;
    }
    if (value || Date.now() >= deadline) return value;
    await sleep(100);
  }
}

/** The path of a Rust binary built by cargo (QUERN_BIN_DIR, default target/debug); throws if it is missing. */
export function binary(name) {
  const dir = process.env.QUERN_BIN_DIR || join(REPO_ROOT, 'target', 'debug');
  const path = join(dir, name);
  if (!existsSync(path)) {
    throw new Error(`${path} is missing: build it first (cargo build -p quern-worker -p quern-fake-embedder)`);
  }
  return path;
}

/** Starts a child process; its output is kept (the last 64 KiB) for failure messages. */
function startProcess(path, args, env = {}) {
  const child = spawn(path, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const keep = (chunk) => {
    output = (output + chunk.toString()).slice(-65536);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  return {
    child,
    exited,
    output: () => output,
    /** SIGTERM, then SIGKILL if still running after `graceMs`. */
    async stop(graceMs = 15_000) {
      if (child.exitCode !== null || child.signalCode !== null) return exited;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      const status = await exited;
      clearTimeout(timer);
      return status;
    },
  };
}

/** The Rust fake embedding server on a free port, with the tests' dimension. */
export async function startFakeEmbedder() {
  const process_ = startProcess(binary('quern-fake-embedder'), ['--port', '0', '--dim', String(TEST_DIM)]);
  // It prints `quern-fake-embedder listening on http://127.0.0.1:PORT (dim N)` once bound.
  const url = await waitFor(() => /listening on (http:\/\/\S+)/.exec(process_.output())?.[1], 30_000);
  if (!url) {
    await process_.stop();
    throw new Error(`the fake embedder did not start:\n${process_.output()}`);
  }
  return { ...process_, url };
}

/** A quern-worker process consuming `prefix` into `databaseUrl`, migrating it at start. */
export function startWorker({ prefix, databaseUrl: dbUrl, embeddingUrl, amqpUrl = AMQP_URL }) {
  // Flags rather than QUERN_* variables: flags win over whatever the environment running the tests holds.
  return startProcess(binary('quern-worker'), [
    '--amqp-url',
    amqpUrl,
    '--queue-prefix',
    prefix,
    '--database-url',
    dbUrl,
    '--embedding-url',
    embeddingUrl,
    '--embedding-dim',
    String(TEST_DIM),
    '--retry-tiers',
    TEST_RETRY_TIERS.join(','),
    '--metrics-addr',
    'off',
    '--shutdown-grace-secs',
    '5',
    '--migrate',
  ]);
}

/** `status` of each job in quern_jobs, by job id (jobs the worker has not seen are absent). */
export async function jobStatuses(db, jobIds) {
  const { rows } = await db
    .query('SELECT job_id::text AS job_id, status FROM quern_jobs WHERE job_id = ANY($1::uuid[])', [jobIds])
    .catch(() => ({ rows: [] }));
  return Object.fromEntries(rows.map((row) => [row.job_id, row.status]));
}

/** Waits until every job in `jobIds` has status succeeded; returns the statuses seen last. */
export async function waitForSucceeded(db, jobIds, timeoutMs = 60_000) {
  let last = {};
  await waitFor(async () => {
    last = await jobStatuses(db, jobIds);
    return jobIds.every((id) => last[id] === 'succeeded');
  }, timeoutMs);
  return last;
}

/** A free TCP port on 127.0.0.1 right now. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** The AMQP URL with another host and port (the proxy's), keeping credentials and vhost. */
export function viaPort(port) {
  const url = new URL(AMQP_URL);
  url.hostname = '127.0.0.1';
  url.port = String(port);
  return url.toString();
}

/**
 * A TCP proxy in front of RabbitMQ. `cut()` drops every connection and stops listening, as a broker that went
 * away does (the port then refuses connections); `start()` listens again on the same port; `hold()` stops
 * forwarding the broker's replies without closing anything, as a wedged broker or a half-open link does.
 */
export class BrokerProxy {
  constructor() {
    const upstream = new URL(AMQP_URL);
    this.upstreamHost = upstream.hostname;
    this.upstreamPort = Number(upstream.port || 5672);
    this.sockets = new Set();
    this.held = false;
    this.server = undefined;
    this.port = undefined;
  }

  get url() {
    return viaPort(this.port);
  }

  async start() {
    this.port ??= await freePort();
    this.held = false;
    this.server = net.createServer((client) => {
      const broker = net.connect(this.upstreamPort, this.upstreamHost);
      for (const socket of [client, broker]) {
        this.sockets.add(socket);
        socket.on('error', () => {});
        socket.on('close', () => this.sockets.delete(socket));
      }
      client.pipe(broker);
      broker.on('data', (chunk) => {
        if (!this.held) client.write(chunk);
      });
      client.on('close', () => broker.destroy());
      broker.on('close', () => client.destroy());
    });
    await new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.port, '127.0.0.1', resolve);
    });
    return this;
  }

  hold() {
    this.held = true;
  }

  async cut() {
    for (const socket of this.sockets) socket.destroy();
    this.sockets.clear();
    if (this.server) await new Promise((resolve) => this.server.close(() => resolve()));
    this.server = undefined;
  }
}
