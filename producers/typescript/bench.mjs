// Throughput of @quern/producer with publisher confirms, for comparison with the Rust producer's figure:
// jobs/s awaiting each enqueue in turn (single), enqueueMany of --batch jobs at a time (batched), and
// --concurrency enqueue calls in flight at once (concurrent: many web requests sharing one producer).
// Publishes to a throwaway queue prefix, deleted at the end; nothing consumes it.
//
//   node bench.mjs [--url amqp://guest:guest@127.0.0.1:5672/%2f] [--single 2000] [--batched 20000]
//                  [--batch 100] [--concurrency 100] [--text-bytes 1000]
//
// Prints a table on stderr and one JSON line on stdout.

import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';

import amqp from 'amqplib';

import { Producer, redactUrl } from '@quern/producer';

const { values } = parseArgs({
  options: {
    url: { type: 'string', default: process.env.QUERN_AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672/%2f' },
    single: { type: 'string', default: '2000' },
    batched: { type: 'string', default: '20000' },
    batch: { type: 'string', default: '100' },
    concurrency: { type: 'string', default: '100' },
    'text-bytes': { type: 'string', default: '1000' },
  },
});
const count = (name) => {
  const n = Number(values[name]);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a positive whole number`);
  return n;
};
const settings = {
  single: count('single'),
  batched: count('batched'),
  batch: count('batch'),
  concurrency: count('concurrency'),
  textBytes: count('text-bytes'),
};
const prefix = `quern-bench-ts-${randomBytes(4).toString('hex')}`;
const text = 'lorem ipsum '.repeat(Math.ceil(settings.textBytes / 12)).slice(0, settings.textBytes);
const job = (i) => ({ collection: 'bench', documentId: `doc-${i}`, text });

async function deleteQueues() {
  const connection = await amqp.connect(values.url);
  connection.on('error', () => {});
  const channel = await connection.createChannel();
  channel.on('error', () => {});
  for (const queue of [`${prefix}.ingest`, `${prefix}.dead`]) await channel.deleteQueue(queue);
  for (const exchange of [prefix, `${prefix}.dead`]) await channel.deleteExchange(exchange);
  await connection.close();
}

/** Runs `fn`, returning jobs per second for `jobs` jobs. */
async function timed(jobs, fn) {
  const started = process.hrtime.bigint();
  await fn();
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  return { jobs, seconds: Number(seconds.toFixed(3)), jobsPerSecond: Math.round(jobs / seconds) };
}

const producer = await Producer.connect(values.url, { queuePrefix: prefix });
const results = {};
try {
  // Warm-up: the connection, JIT and the queue's first writes out of the measurement.
  await producer.enqueueMany(Array.from({ length: 200 }, (_, i) => job(i)));

  results.single = await timed(settings.single, async () => {
    for (let i = 0; i < settings.single; i++) await producer.enqueue(job(i));
  });
  results.batched = await timed(settings.batched, async () => {
    for (let i = 0; i < settings.batched; i += settings.batch) {
      const size = Math.min(settings.batch, settings.batched - i);
      await producer.enqueueMany(Array.from({ length: size }, (_, k) => job(i + k)));
    }
  });
  results.concurrent = await timed(settings.batched, async () => {
    let next = 0;
    const lane = async () => {
      while (next < settings.batched) await producer.enqueue(job(next++));
    };
    await Promise.all(Array.from({ length: settings.concurrency }, lane));
  });
} finally {
  await producer.close();
  await deleteQueues();
}

const rows = [
  ['single (await each enqueue)', results.single],
  [`batched (enqueueMany of ${settings.batch})`, results.batched],
  [`concurrent (${settings.concurrency} enqueue calls in flight)`, results.concurrent],
];
console.error(
  `@quern/producer, Node ${process.version}, ${redactUrl(values.url)}, ${settings.textBytes}-byte texts, publisher confirms`,
);
for (const [name, r] of rows) {
  console.error(`${name.padEnd(44)} ${String(r.jobsPerSecond).padStart(8)} jobs/s  (${r.jobs} jobs in ${r.seconds} s)`);
}
console.log(
  JSON.stringify({
    producer: 'typescript',
    node: process.version,
    textBytes: settings.textBytes,
    batch: settings.batch,
    ...results,
  }),
);
