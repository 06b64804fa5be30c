import type { Channel } from 'amqplib';
/** Default prefix of every exchange and queue name. */
export declare const DEFAULT_QUEUE_PREFIX = "quern";
/** Routing key of ingestion jobs on the work exchange. */
export declare const INGEST_ROUTING_KEY = "ingest";
/** Deliveries after which the broker dead-letters a message itself: what the workers declare. */
export declare const DELIVERY_LIMIT = 20;
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
export declare function topology(prefix?: string): Topology;
/**
 * Arguments of the ingest queue. Integers carry the AMQP type the Rust side sends (`{'!': type}` is amqplib's
 * way to choose one): left to itself amqplib would send 20 as a byte. RabbitMQ compares integer arguments by
 * value, but being identical on the wire leaves nothing to argue about.
 */
export declare function ingestQueueArguments(t: Topology): Record<string, unknown>;
/** Arguments of the dead-letter queue: a quorum queue and nothing else (see the Rust module for why). */
export declare function deadQueueArguments(): Record<string, unknown>;
/** Declares both exchanges and queues and their bindings, in the Rust order; safe to repeat. */
export declare function declareTopology(channel: Channel, t: Topology): Promise<void>;
