import { type DeleteInput, type JobInput } from './job.js';
import { type Topology } from './topology.js';
/** Where and how to publish. */
export interface ProducerOptions {
    /** Prefix of the exchange and queue names (default `quern`), as the workers' `QUERN_QUEUE_PREFIX`. */
    queuePrefix?: string;
    /** How long to wait for the broker's confirm of a publish or a batch (default 30 000 ms, as in Rust). */
    confirmTimeoutMs?: number;
    /** How long to wait for the TCP connection to the broker (default 10 000 ms). */
    connectTimeoutMs?: number;
    /** Name shown for the connection in RabbitMQ's management UI (default `quern-producer`). */
    connectionName?: string;
}
/** Per-call options. */
export interface EnqueueOptions {
    /**
     * W3C traceparent of the caller's span (e.g. the incoming request's `traceparent` header): the worker
     * continues that trace. Without it, the active OpenTelemetry span when @opentelemetry/api is installed, else
     * a new trace per job. An invalid value is ignored, as W3C Trace Context asks of receivers.
     */
    traceparent?: string;
}
/** Why the broker did not take a job (or the connection is gone); the next call reconnects. */
export type BrokerErrorCode = 'CONNECT' | 'CONNECTION_LOST' | 'NACKED' | 'UNROUTABLE' | 'CONFIRM_TIMEOUT' | 'CLOSED';
/**
 * The broker did not confirm a job. Jobs listed in `unconfirmedJobIds` may or may not be queued: enqueue them
 * again with the same `jobId` (the worker treats a job id it already finished as done).
 */
export declare class BrokerError extends Error {
    name: string;
    readonly code: BrokerErrorCode;
    /** The first job the failure is known to concern, if any. */
    readonly jobId: string | undefined;
    /** Every job of the call that the broker did not confirm. */
    readonly unconfirmedJobIds: readonly string[];
    constructor(code: BrokerErrorCode, message: string, options?: {
        jobIds?: readonly string[];
        cause?: unknown;
    });
}
/** `amqp://user:***@host/vhost`: URLs are logged and put in errors, passwords never. */
export declare function redactUrl(url: string): string;
/**
 * Publishes Quern jobs to RabbitMQ. Create one per process with `Producer.connect` and share it: calls may
 * overlap, and all of them use one connection and one confirm channel.
 */
export declare class Producer {
    /** The exchange and queues this producer publishes to. */
    readonly topology: Topology;
    private readonly url;
    private readonly confirmTimeoutMs;
    private readonly connectTimeoutMs;
    private readonly connectionName;
    private readonly activeTraceparent;
    private session;
    private opening;
    private closed;
    /** Calls between validation and their last confirm. */
    private readonly inFlight;
    private constructor();
    /** Connects, declares the topology (idempotently) and enables publisher confirms. */
    static connect(amqpUrl: string, options?: ProducerOptions): Promise<Producer>;
    /** Validates and publishes one job; resolves to its id once the broker has confirmed it. */
    enqueue(job: JobInput, options?: EnqueueOptions): Promise<string>;
    /** Enqueues the deletion of a document and all of its chunks; resolves to the job id once confirmed. */
    delete(document: Omit<DeleteInput, 'op'>, options?: EnqueueOptions): Promise<string>;
    /**
     * Validates every job first (publishing none if one is invalid), publishes them all, then waits for the
     * confirms together: one round trip for the batch. Resolves to the job ids in order. On a BrokerError some
     * jobs may be queued already; its `unconfirmedJobIds` are the ones to send again (same ids are safe).
     */
    enqueueMany(jobs: readonly JobInput[], options?: EnqueueOptions): Promise<string[]>;
    private publish;
    /**
     * Closes the connection once the publishes in flight are settled. Later calls fail with code CLOSED.
     * Safe to call twice.
     */
    close(): Promise<void>;
    /** Waits for every confirm of a call, up to the timeout, and throws one BrokerError for what failed. */
    private settle;
    /** The live session, opening one (shared by concurrent callers) when there is none or it died. */
    private live;
    private forget;
    private open;
}
