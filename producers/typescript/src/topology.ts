// The broker names derived from one prefix, and their declaration. The queue arguments must equal the Rust
// declaration's (crates/quern-queue/src/topology.rs) key for key and value for value: RabbitMQ refuses a
// redeclare with other arguments (PRECONDITION_FAILED), so a producer that differed could not start beside
// the workers, or would stop them starting. test/end-to-end.test.mjs declares both ways round with a real worker.

import type { Channel } from 'amqplib';

/** Default prefix of every exchange and queue name. */
export const DEFAULT_QUEUE_PREFIX = 'quern';
/** Routing key of ingestion jobs on the work exchange. */
export const INGEST_ROUTING_KEY = 'ingest';
/** Deliveries after which the broker dead-letters a message itself: what the workers declare. */
export const DELIVERY_LIMIT = 20;

/** The exchanges and queues of one Quern deployment. */
export interface Topology {
  readonly prefix: string;
  /** Durable direct exchange jobs are published to: `<prefix>`. */
  readonly workExchange: string;
  /** Durable quorum queue the workers consume: `<prefix>.ingest`. */
  readonly ingestQueue: string;
  /** Fanout exchange of dead letters: `<prefix>.dead`. */
  readonly deadExchange: string;
  /** Durable quorum queue holding dead letters: `<prefix>.dead`. */
  readonly deadQueue: string;
  readonly ingestRoutingKey: string;
}

/** Names derived from `prefix`; throws a TypeError for a prefix the workers would refuse. */
export function topology(prefix: string = DEFAULT_QUEUE_PREFIX): Topology {
  if (typeof prefix !== 'string' || !/^[A-Za-z0-9._-]{1,200}$/.test(prefix)) {
    throw new TypeError(
      `queue prefix \`${String(prefix)}\` must be 1..=200 characters of ASCII letters, digits, '.', '-' or '_'`,
    );
  }
  return Object.freeze({
    prefix,
    workExchange: prefix,
    ingestQueue: `${prefix}.ingest`,
    deadExchange: `${prefix}.dead`,
    deadQueue: `${prefix}.dead`,
    ingestRoutingKey: INGEST_ROUTING_KEY,
  });
}

/**
 * Arguments of the ingest queue. Integers carry the AMQP type the Rust side sends (`{'!': type}` is amqplib's
 * way to choose one): left to itself amqplib would send 20 as a byte. RabbitMQ compares integer arguments by
 * value, but being identical on the wire leaves nothing to argue about.
 */
export function ingestQueueArguments(t: Topology): Record<string, unknown> {
  return {
    'x-queue-type': 'quorum',
    'x-delivery-limit': { '!': 'int', value: DELIVERY_LIMIT },
    'x-dead-letter-exchange': t.deadExchange,
    // The broker keeps a dead-lettered message until the dead-letter queue has confirmed it; this only works
    // with reject-publish overflow.
    'x-dead-letter-strategy': 'at-least-once',
    'x-overflow': 'reject-publish',
  };
}

/** Arguments of the dead-letter queue: a quorum queue and nothing else (see the Rust module for why). */
export function deadQueueArguments(): Record<string, unknown> {
  return { 'x-queue-type': 'quorum' };
}

/** Declares both exchanges and queues and their bindings, in the Rust order; safe to repeat. */
export async function declareTopology(channel: Channel, t: Topology): Promise<void> {
  const exchange = { durable: true, autoDelete: false, internal: false };
  const queue = { durable: true, exclusive: false, autoDelete: false };
  await channel.assertExchange(t.workExchange, 'direct', exchange);
  await channel.assertExchange(t.deadExchange, 'fanout', exchange);
  await channel.assertQueue(t.deadQueue, { ...queue, arguments: deadQueueArguments() });
  await channel.bindQueue(t.deadQueue, t.deadExchange, '');
  await channel.assertQueue(t.ingestQueue, { ...queue, arguments: ingestQueueArguments(t) });
  await channel.bindQueue(t.ingestQueue, t.workExchange, t.ingestRoutingKey);
}
