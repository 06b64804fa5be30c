import type { JobBody, JsonObject } from './job.js';
/** Buckets a document may fall in: a percentage is a threshold over them, to two decimals of a percent. */
export declare const CUTOVER_BUCKETS = 10000;
/** What the legacy path gets for a document on its side: the validated job, without a job id. */
export interface LegacyJob {
    collection: string;
    documentId: string;
    text: string;
    /** `null` when the job had none, as the wire body's absent `metadata` means. */
    metadata: JsonObject | null;
}
/** What the legacy path's delete gets. */
export interface LegacyDocument {
    collection: string;
    documentId: string;
}
/** The caller's old ingestion path (a Celery client's send, a Node worker's queue); its result is returned. */
export type LegacyEnqueue<R = unknown> = (job: LegacyJob) => R | PromiseLike<R>;
/** The old path's delete; its result is returned. */
export type LegacyDelete<R = unknown> = (document: LegacyDocument) => R | PromiseLike<R>;
/**
 * The document's bucket, 0 to 9,999: the first 8 bytes of SHA-256 over the UTF-8 collection, one 0x00 byte
 * and the UTF-8 document id, read as a big-endian unsigned integer, modulo 10,000. The same in every process,
 * language and release.
 */
export declare function cutoverBucket(collection: string, documentId: string): number;
/**
 * Whether the document goes to Quern at `percent` (0 to 100): its bucket is below `percent × 100`, rounded.
 * Comparing two percentages tells which documents a change moved, e.g. to backfill into Quern what a legacy
 * worker wrote to a table of its own: `goesToQuern(c, d, next) && !goesToQuern(c, d, previous)`.
 */
export declare function goesToQuern(collection: string, documentId: string, percent: number): boolean;
/** `percent` if it is a finite number from 0 to 100; a RangeError naming the option otherwise. */
export declare function checkPercent(percent: unknown, name: string): number;
/**
 * A producer's routing: the percentage, changeable at run time, and the legacy functions. Routes are read once
 * per call, so a call in flight when the percentage changes goes entirely by the old one.
 */
export declare class Cutover<L, D> {
    private readonly legacy;
    private readonly legacyDelete;
    private current;
    private bucketsToQuern;
    constructor(percent: unknown, legacy: LegacyEnqueue<L> | undefined, legacyDelete: LegacyDelete<D> | undefined);
    get percent(): number;
    set percent(percent: number);
    /**
     * For each validated body, whether it goes to Quern. Checked before anything is sent: a delete on the legacy
     * side without `legacyDelete` throws here, so a batch holding one publishes nothing.
     */
    routes(bodies: readonly JobBody[]): boolean[];
    /** Hands one body routed to the legacy side to the legacy path; resolves to what that returned. */
    handOver(body: JobBody): Promise<L | D>;
}
