// Shared set-up of the console's browser tests, against the real services: RabbitMQ and Postgres from
// QUERN_TEST_AMQP_URL and QUERN_TEST_DATABASE_URL, the Rust binaries from target/debug (the fake embedder, a real
// quern-worker and `quern console`), and Debian's Chromium driven by playwright-core.
//
// A `World` is one test's own deployment: a queue prefix and a database no other test uses, a fake embedder, a
// worker migrating and consuming, and a console in front of them. `world.cleanup()` stops every process and
// deletes the queues, exchanges and database, whatever happened before.
//
// The helpers copied from producers/typescript/test/harness.mjs are copied on purpose: the two packages install
// apart, so neither imports the other.

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync } from 'node:fs';
import net from 'node:net';
import { dirname, join, relative, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

import amqp from 'amqplib';
import pg from 'pg';
import { chromium } from 'playwright-core';

export const PACKAGE_DIR = dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = resolve(PACKAGE_DIR, '../..');
export const AMQP_URL = process.env.QUERN_TEST_AMQP_URL || 'amqp://guest:guest@127.0.0.1:5672/%2f';
export const ADMIN_DATABASE_URL =
  process.env.QUERN_TEST_DATABASE_URL || 'postgresql://postgres@127.0.0.1:5433/postgres';
/** Where `screenshot()` writes (repo-root relative unless QUERN_CONSOLE_SCREENSHOTS says otherwise). */
export const SCREENSHOT_DIR = resolve(REPO_ROOT, process.env.QUERN_CONSOLE_SCREENSHOTS || 'target/console-screenshots');
/** Debian's Chromium (package `chromium`); browser downloads do not work on the project's machines. */
export const CHROMIUM = process.env.QUERN_CHROMIUM || '/usr/bin/chromium';
/** The Rust tests' embedding dimension: small vectors, cheap to store. */
export const TEST_DIM = 64;
/** Retry tiers of the test workers (quick retries); the console is told the same, and cleanup deletes them. */
export const TEST_RETRY_TIERS = ['100ms', '200ms'];
const DEFAULT_RETRY_TIERS = ['1s', '10s', '60s', '300s'];
/** The token the tests' consoles are started with (QUERN_CONSOLE_TOKEN). */
export const CONSOLE_TOKEN = `console-test-${randomBytes(8).toString('hex')}`;
/** Text the tests' fake embedders refuse with 400, as a provider's content policy would (`--reject-marker`). */
export const REJECT_MARKER = 'FORBIDDEN';

// ---------------------------------------------------------------------------------------------------------------
// Names, waiting

/** `<label>_<12 hex>`: a name no other run uses. */
export function uniqueName(label) {
  return `${label}_${randomBytes(6).toString('hex')}`;
}

/** A queue prefix of the test's own, so tests never see each other's jobs. */
export function testPrefix(label) {
  return uniqueName(`qt_console_${label}`);
}

/** Polls `check` every 100 ms until it returns a truthy value or `timeoutMs` passes; returns the last value. */
export async function waitFor(check, timeoutMs = 30_000, everyMs = 100) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let value;
    try {
      value = await check();
    } catch {
      value = undefined;
    }
    if (value || Date.now() >= deadline) return value;
    await sleep(everyMs);
  }
}

/** A free TCP port on 127.0.0.1 right now. */
export function freePort() {
  return new Promise((resolve_, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve_(port));
    });
  });
}

let lastMs = 0;
let counter = 0;

/**
 * A new UUIDv7 job id, as Quern's producers make them (48-bit milliseconds, a counter, random bits): the worker
 * orders the jobs of one document by the time in their ids.
 */
export function newJobId() {
  const now = Date.now();
  const rand = randomBytes(10);
  if (now > lastMs) {
    lastMs = now;
    counter = ((rand[0] << 8) | rand[1]) & 0x7ff;
  } else if (++counter > 0xfff) {
    lastMs++;
    counter = 0;
  }
  const bytes = Buffer.alloc(16);
  bytes.writeUIntBE(lastMs, 0, 6);
  bytes[6] = 0x70 | (counter >>> 8);
  bytes[7] = counter & 0xff;
  bytes[8] = 0x80 | (rand[2] & 0x3f);
  rand.copy(bytes, 9, 3, 10);
  const hex = bytes.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

// ---------------------------------------------------------------------------------------------------------------
// RabbitMQ

/** Runs `fn` with a channel (a confirm channel when `confirm`) on a connection of its own, closed afterwards. */
export async function withChannel(fn, { confirm = false } = {}) {
  const connection = await amqp.connect(AMQP_URL);
  // amqplib throws 'error' events nobody listens to out of the event loop; the rejected call says enough.
  connection.on('error', () => {});
  try {
    const channel = confirm ? await connection.createConfirmChannel() : await connection.createChannel();
    channel.on('error', () => {});
    return await fn(channel);
  } finally {
    await connection.close().catch(() => {});
  }
}

/** Messages ready in `queue` (a passive declare); throws when the queue does not exist. */
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

/**
 * Publishes `body` (a string or Buffer, sent as it is: a malformed one is the point of some tests) to the work
 * exchange `<prefix>` with routing key `ingest`, as Quern's producers do: persistent, application/json, the
 * given message id, the contract header; mandatory, and waits for the broker's confirm. Throws if the broker
 * returned (no queue bound yet) or nacked it.
 */
export async function publishRaw(prefix, body, { messageId, headers = {} } = {}) {
  const content = Buffer.isBuffer(body) ? body : Buffer.from(String(body), 'utf8');
  await withChannel(
    async (channel) => {
      let returned;
      channel.on('return', (message) => {
        returned = `${message.fields.replyCode} ${message.fields.replyText}`;
      });
      await new Promise((resolve_, reject) => {
        channel.publish(
          prefix,
          'ingest',
          content,
          {
            mandatory: true,
            persistent: true,
            contentType: 'application/json',
            messageId,
            timestamp: Math.floor(Date.now() / 1000),
            appId: 'quern-console-tests',
            headers: { 'quern-contract': { '!': 'long', value: 1 }, ...headers },
          },
          (error) => (error ? reject(new Error(`the broker nacked ${messageId}`)) : resolve_()),
        );
      });
      // A return arrives before the confirm of the same message.
      if (returned) throw new Error(`the broker returned ${messageId}: ${returned}`);
    },
    { confirm: true },
  );
}

/** Publishes a job (an object, JSON-encoded); the message id is its job_id. Returns the job_id. */
export async function publishJob(prefix, job) {
  await publishRaw(prefix, JSON.stringify(job), { messageId: job.job_id });
  return job.job_id;
}

/** An upsert job with a fresh UUIDv7 id. */
export function upsert(collection, documentId, text, metadata) {
  return { job_id: newJobId(), collection, document_id: documentId, text, ...(metadata ? { metadata } : {}) };
}

/** A few sentences; longer for larger `n`, so documents make different numbers of chunks. */
export function documentText(n) {
  const topics = ['whales', 'lighthouses', 'bread', 'comets', 'glaciers', 'violins'];
  return Array.from(
    { length: 4 + 40 * n },
    (_, i) => `Sentence ${i} of document ${n} is about ${topics[(n + i) % topics.length]} and little else.`,
  ).join(' ');
}

// ---------------------------------------------------------------------------------------------------------------
// Postgres

/** The admin URL with another database name, keeping any query string. */
function databaseUrl(name) {
  const url = new URL(ADMIN_DATABASE_URL);
  url.pathname = `/${name}`;
  return url.toString();
}

/** A fresh, empty database (the worker migrates it with --migrate); `drop()` removes it. */
export async function createDatabase() {
  const name = uniqueName('quern_console_test');
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

/** `status` of each job in quern_jobs, by job id (jobs no worker has seen are absent). */
export async function jobStatuses(db, jobIds) {
  const { rows } = await db
    .query('SELECT job_id::text AS job_id, status FROM quern_jobs WHERE job_id = ANY($1::uuid[])', [jobIds])
    .catch(() => ({ rows: [] }));
  return Object.fromEntries(rows.map((row) => [row.job_id, row.status]));
}

/** Waits until every job of `expected` (`{ jobId: status }`) has that status; returns the statuses seen last. */
export async function waitForStatuses(db, expected, timeoutMs = 60_000) {
  const ids = Object.keys(expected);
  let last = {};
  await waitFor(async () => {
    last = await jobStatuses(db, ids);
    return ids.every((id) => last[id] === expected[id]);
  }, timeoutMs);
  return last;
}

// ---------------------------------------------------------------------------------------------------------------
// Processes

/** Every child still running; killed when this process exits (a test cut short by a timeout or Ctrl-C). */
const children = new Set();
process.on('exit', () => {
  for (const child of children) child.kill('SIGKILL');
});

/** The path of a Rust binary built by cargo (QUERN_BIN_DIR, default target/debug); throws if it is missing. */
export function binary(name) {
  const dir = process.env.QUERN_BIN_DIR || join(REPO_ROOT, 'target', 'debug');
  const path = join(dir, name);
  if (!existsSync(path)) {
    throw new Error(
      `${path} is missing: build it first (cargo build -p quern-cli -p quern-worker -p quern-fake-embedder)`,
    );
  }
  return path;
}

/**
 * Starts a child process; its output is kept (the last 64 KiB, stdout apart too) for failure messages. A
 * variable of `env` set to undefined is removed from the inherited environment.
 */
export function startProcess(name, path, args, env = {}) {
  const merged = { ...process.env, NO_COLOR: '1', ...env };
  for (const [key, value] of Object.entries(merged)) if (value === undefined) delete merged[key];
  const child = spawn(path, args, { env: merged, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  child.on('exit', () => children.delete(child));
  let output = '';
  let stdout = '';
  child.stdout.on('data', (chunk) => {
    stdout = (stdout + chunk.toString()).slice(-65536);
    output = (output + chunk.toString()).slice(-65536);
  });
  child.stderr.on('data', (chunk) => {
    output = (output + chunk.toString()).slice(-65536);
  });
  const exited = new Promise((resolve_) => child.on('exit', (code, signal) => resolve_({ code, signal })));
  return {
    name,
    child,
    exited,
    output: () => output,
    stdout: () => stdout,
    running: () => child.exitCode === null && child.signalCode === null,
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

/** Waits for `pattern` in what `process_` printed (`from`: 'output' or 'stdout'); throws with its log if it ends first. */
async function waitForLine(process_, pattern, what, { from = 'output', timeoutMs = 60_000 } = {}) {
  const match = await waitFor(() => pattern.exec(process_[from]()) || (!process_.running() && 'exited'), timeoutMs);
  if (!match || match === 'exited') {
    await process_.stop();
    throw new Error(
      `${what}: ${match === 'exited' ? 'the process ended' : 'timed out'}\n--- its output ---\n${process_.output()}`,
    );
  }
  return match;
}

/**
 * The Rust fake embedding server with the tests' dimension, on `port` (0: a free one). With `rejectMarker` it
 * answers 400 to any input containing that text, as a provider's content policy would: a job that can never be
 * embedded as it is, which the worker dead-letters at once with reason `embedding_rejected`. With `throttleRate`
 * (0..1) it answers that fraction of requests 429 with Retry-After: 1.
 */
export async function startFakeEmbedder({ port = 0, rejectMarker, throttleRate } = {}) {
  const args = ['--port', String(port), '--dim', String(TEST_DIM)];
  if (rejectMarker) args.push('--reject-marker', rejectMarker);
  if (throttleRate) args.push('--throttle-rate', String(throttleRate));
  const process_ = startProcess('fake embedder', binary('quern-fake-embedder'), args);
  // It prints `quern-fake-embedder listening on http://127.0.0.1:PORT (dim N)` once bound.
  const match = await waitForLine(process_, /listening on (http:\/\/\S+)/, 'the fake embedder did not start', {
    timeoutMs: 30_000,
  });
  const url = match[1];
  return { ...process_, url, port: Number(new URL(url).port) };
}

/**
 * A quern-worker consuming `prefix` into `databaseUrl`, migrating it at start, its ops endpoint on a port the
 * OS picks (the worker logs it: `ops endpoint listening on http://ADDR: /metrics ...`). Resolves once `/readyz`
 * answers 200 (consuming, database and embedding API reachable), with `metricsUrl`.
 */
export async function startWorker({ prefix, databaseUrl: dbUrl, embeddingUrl }) {
  // Flags rather than QUERN_* variables: flags win over whatever the environment running the tests holds.
  const process_ = startProcess('worker', binary('quern-worker'), [
    '--amqp-url',
    AMQP_URL,
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
    '127.0.0.1:0',
    '--shutdown-grace-secs',
    '5',
    '--migrate',
  ]);
  const match = await waitForLine(
    process_,
    /ops endpoint listening on http:\/\/(127\.0\.0\.1:\d+)/,
    'the worker did not report its ops endpoint',
  );
  const base = `http://${match[1]}`;
  const ready = await waitFor(async () => (await fetch(`${base}/readyz`)).status === 200, 90_000, 200);
  if (!ready) {
    await process_.stop();
    throw new Error(`the worker never became ready (${base}/readyz)\n--- its output ---\n${process_.output()}`);
  }
  return { ...process_, metricsUrl: `${base}/metrics`, readyzUrl: `${base}/readyz` };
}

/** The `quern console` arguments the tests start it with (README, "The console: `quern console`"). */
export function consoleArgs({ listen = '127.0.0.1:0', prefix, databaseUrl: dbUrl, metricsUrls, refresh = '60s' }) {
  return [
    'console',
    '--listen',
    listen,
    '--amqp-url',
    AMQP_URL,
    '--queue-prefix',
    prefix,
    '--database-url',
    dbUrl,
    '--retry-tiers',
    TEST_RETRY_TIERS.join(','),
    '--worker-metrics',
    metricsUrls.join(','),
    '--refresh',
    refresh,
  ];
}

/**
 * `quern console` for `prefix`, with QUERN_CONSOLE_TOKEN set unless `token` is null. Resolves once it printed
 * `quern console: listening on http://127.0.0.1:PORT/` on stdout, with `url` (no trailing slash).
 */
export async function startConsole(options) {
  const { token = CONSOLE_TOKEN } = options;
  // null: no QUERN_CONSOLE_TOKEN at all (not even one the environment running the tests holds).
  const env = token === null ? { QUERN_CONSOLE_TOKEN: undefined } : { QUERN_CONSOLE_TOKEN: token };
  const process_ = startProcess('console', binary('quern'), consoleArgs(options), env);
  const match = await waitForLine(
    process_,
    /^quern console: listening on (http:\/\/\S+?)\/?$/m,
    'the console did not print its URL on stdout',
    { from: 'stdout', timeoutMs: 60_000 },
  );
  return { ...process_, url: match[1] };
}

// ---------------------------------------------------------------------------------------------------------------
// The browser

/**
 * Debian's Chromium, headless, through playwright-core. The background-networking flags keep it from trying
 * Google's hosts, which this machine's closed network refuses.
 */
export function launchBrowser() {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} is missing: install Debian's chromium (scripts/test-console.sh does)`);
  }
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--disable-quic',
    ],
  });
}

/** A full-page PNG of `page` in SCREENSHOT_DIR/<name>.png; logs and returns the path. */
export async function screenshot(page, name) {
  mkdirSync(SCREENSHOT_DIR, { recursive: true });
  const path = join(SCREENSHOT_DIR, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  console.log(`screenshot ${name}: ${relative(process.cwd(), path) || path}`);
  return path;
}

/** The integer a cell or figure shows (`1,234` and surrounding space allowed); NaN if it is not one. */
export function integer(text) {
  const cleaned = String(text ?? '')
    .trim()
    .replace(/[,\s\u202f]/g, '');
  return /^-?\d+$/.test(cleaned) ? Number(cleaned) : NaN;
}

// ---------------------------------------------------------------------------------------------------------------
// One test's deployment

/**
 * A test's own deployment: database, fake embedder, worker, console, and a browser context. `options`:
 * `label` (in the prefix), `rejectMarker` (the embedder's content policy), `embedderPort` (fixed, so a test can
 * restart the embedder in place), `refresh` (the console's), `token` (QUERN_CONSOLE_TOKEN; null for none).
 */
export class World {
  static async start(browser, options = {}) {
    const world = new World(browser, options);
    try {
      await world.#start();
    } catch (error) {
      await world.cleanup();
      throw error;
    }
    return world;
  }

  constructor(browser, options) {
    this.browser = browser;
    this.options = options;
    this.prefix = testPrefix(options.label || 'test');
    this.processes = [];
  }

  async #start() {
    this.db = await createDatabase();
    this.embedder = await this.startEmbedder({
      rejectMarker: this.options.rejectMarker,
      throttleRate: this.options.throttleRate,
      port: this.options.embedderPort,
    });
    this.worker = await startWorker({ prefix: this.prefix, databaseUrl: this.db.url, embeddingUrl: this.embedder.url });
    this.processes.push(this.worker);
    this.console = await startConsole({
      prefix: this.prefix,
      databaseUrl: this.db.url,
      metricsUrls: [this.worker.metricsUrl],
      refresh: this.options.refresh,
      token: this.options.token,
    });
    this.processes.push(this.console);
    this.url = this.console.url;
    this.context = await this.browser.newContext({ viewport: { width: 1280, height: 900 } });
    this.page = await this.context.newPage();
  }

  /** A fake embedder kept in this world's processes (stopped by cleanup). */
  async startEmbedder(options) {
    const embedder = await startFakeEmbedder(options);
    this.processes.push(embedder);
    return embedder;
  }

  /** Stops the fake embedder and starts another on the same port with `options` (the worker keeps its URL). */
  async replaceEmbedder(options = {}) {
    const { port } = this.embedder;
    await this.embedder.stop();
    this.embedder = await this.startEmbedder({ ...options, port });
    return this.embedder;
  }

  get ingestQueue() {
    return `${this.prefix}.ingest`;
  }

  get deadQueue() {
    return `${this.prefix}.dead`;
  }

  /** Publishes a job object; returns its job_id. */
  publish(job) {
    return publishJob(this.prefix, job);
  }

  /** Publishes raw bytes with `messageId`. */
  publishRaw(body, messageId) {
    return publishRaw(this.prefix, body, { messageId });
  }

  /** An absolute URL of the console. */
  at(path) {
    return `${this.url}${path}`;
  }

  /** Waits until the dead-letter queue holds `n` ready messages; returns whether it did. */
  waitForDead(n, timeoutMs = 30_000) {
    return waitFor(async () => (await readyCount(this.deadQueue)) === n, timeoutMs);
  }

  /** The processes' output, for failure messages. */
  logs() {
    return this.processes.map((p) => `--- ${p.name} ---\n${p.output()}`).join('\n');
  }

  /** Everything stopped and deleted; never throws, safe to call twice. */
  async cleanup() {
    await this.context?.close().catch(() => {});
    this.context = undefined;
    for (const process_ of [...this.processes].reverse()) await process_.stop().catch(() => {});
    this.processes = [];
    await deleteTopology(this.prefix);
    await this.db?.drop().catch(() => {});
    this.db = undefined;
  }
}

/**
 * Runs `fn(world)` in a fresh World and cleans it up afterwards, failed or not; on failure the error message
 * gains the processes' logs (the console's and worker's explain most failures).
 */
export async function inWorld(browser, options, fn) {
  const world = await World.start(browser, options);
  try {
    return await fn(world);
  } catch (error) {
    if (error && typeof error === 'object') {
      error.message = `${error.message}\n${world.logs()}`;
    }
    throw error;
  } finally {
    await world.cleanup();
  }
}
