import { type LegacyDelete, type LegacyEnqueue } from './cutover.js';
import { type DeleteInput, type JobInput } from './job.js';
import { type Topology } from './topology.js';
/**
 * Where and how to publish, and, during a cut-over from a legacy worker, what to send where. `L` and `D` are
 * what `legacy` and `legacyDelete` resolve to: without them a call resolves to a job id, as before cut-overs.
 */
export interface ProducerOptions<L = unknown, D = unknown> {
    /** Prefix of the exchange and queue names (default `quern`), as the workers' `QUERN_QUEUE_PREFIX`. */
    queuePrefix?: string;
    /** How long to wait for the broker's confirm of a publish or a batch (default 30 000 ms, as in Rust). */
    confirmTimeoutMs?: number;
    /** How long to wait for the TCP connection to the broker (default 10 000 ms). */
    connectTimeoutMs?: number;
    /** Name shown for the connection in RabbitMQ's management UI (default `quern-producer`). */
    connectionName?: string;
    /**
     * Share of documents sent to Quern, 0 to 100 (default 100: all of them), chosen per document by a stable
     * hash (see `cutoverBucket`); the others go through `legacy`. Changeable later with `setCutoverPercent`.
     */
    cutoverPercent?: number;
    /**
     * The legacy ingestion path, required below 100%: a document on its side is handed to it, nothing is
     * published, and `enqueue` resolves to what it returned.
     */
    legacy?: LegacyEnqueue<L> | null;
    /** The legacy path's delete; without it, deleting a document on the legacy side rejects. */
    legacyDelete?: LegacyDelete<D> | null;
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
 * overlap, and all of them use one connection and one confirm channel. `L` and `D` are what the legacy
 * functions of a cut-over resolve to (`never` without them, so calls resolve to job ids alone).
 */
export declare class Producer<L = never, D = never> {
    /** The exchange and queues this producer publishes to. */
    readonly topology: Topology;
    private readonly url;
    /** amqplib's TLS options, from the URL's query (see tls.ts); none for amqp://. */
    private readonly tls;
    private readonly confirmTimeoutMs;
    private readonly connectTimeoutMs;
    private readonly connectionName;
    private readonly activeTraceparent;
    private session;
    private opening;
    private closed;
    private readonly cutover;
    /** Calls between validation and their last confirm or legacy call. */
    private readonly inFlight;
    private constructor();
    /**
     * Connects, declares the topology (idempotently) and enables publisher confirms. The options are checked
     * before connecting: a bad `cutoverPercent`, or one below 100 without `legacy`, rejects at once.
     */
    static connect<L = never, D = never>(amqpUrl: string, options?: ProducerOptions<L, D>): Promise<Producer<L, D>>;
    /** The share of documents sent to Quern, 0 to 100; the others go through `legacy`. */
    get cutoverPercent(): number;
    /**
     * Changes the share of documents sent to Quern, checked as at connect; calls made from now on follow it.
     * 0 sends every document back to the legacy path at once; raising it moves only the documents whose bucket
     * lies between the old and the new threshold, and none back.
     */
    setCutoverPercent(percent: number): void;
    /**
     * Validates and publishes one job; resolves to its id once the broker has confirmed it. During a cut-over, a
     * document on the legacy side is handed to `legacy` (or `legacyDelete`) instead, and the call resolves to
     * what that returned.
     */
    enqueue(job: JobInput, options?: EnqueueOptions): Promise<string | L | D>;
    /**
     * Enqueues the deletion of a document and all of its chunks; resolves to the job id once confirmed, or to
     * what `legacyDelete` returned for a document on the legacy side.
     */
    delete(document: Omit<DeleteInput, 'op'>, options?: EnqueueOptions): Promise<string | D>;
    /**
     * Validates every job first (publishing none if one is invalid), publishes them all, then waits for the
     * confirms together: one round trip for the batch. Resolves to the job ids in order. On a BrokerError some
     * jobs may be queued already; its `unconfirmedJobIds` are the ones to send again (same ids are safe).
     *
     * During a cut-over, the routes are checked with the jobs (nothing is sent if a legacy-side delete has no
     * `legacyDelete`), the Quern share is published as above, and then the legacy-side jobs are handed to the
     * legacy path one after another in their order; the result holds, in the order of `jobs`, job ids and what
     * the legacy functions returned.
     */
    enqueueMany(jobs: readonly JobInput[], options?: EnqueueOptions): Promise<(string | L | D)[]>;
    /**
     * Publishes the Quern share, then hands the rest to the legacy path. Quern first: if the broker fails, the
     * caller sends the whole call again, and the legacy path, which may not be idempotent, has not seen it yet.
     */
    private dispatch;
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
