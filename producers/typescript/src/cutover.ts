// Cut-over by percentage, sticky per document: while a legacy ingestion worker still runs, a share of documents
// goes to Quern and the rest through the caller's legacy path, chosen by a stable hash of (collection, document
// id). The rule is the same in every Quern producer (crates/quern-core/src/cutover.rs, the Python producer's
// cutover.py; schema/examples/cutover.json holds vectors all their tests check), so a document goes the same way
// from every web tier and its versions never race across two systems.

import { createHash } from 'node:crypto';

import type { JobBody, JsonObject } from './job.js';

/** Buckets a document may fall in: a percentage is a threshold over them, to two decimals of a percent. */
export const CUTOVER_BUCKETS = 10_000;

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
export function cutoverBucket(collection: string, documentId: string): number {
  // A lone surrogate has no UTF-8 form: Buffer would hash U+FFFD in its place, a bucket no other producer
  // could compute (Python refuses to encode it, Rust cannot hold it), so refuse it here too.
  hashable(collection, 'collection');
  hashable(documentId, 'documentId');
  const digest = createHash('sha256').update(collection, 'utf8').update(SEPARATOR).update(documentId, 'utf8').digest();
  // Beyond 2^53 a Number loses bits, so the modulo is taken in BigInt.
  return Number(digest.readBigUInt64BE(0) % BigInt(CUTOVER_BUCKETS));
}

/**
 * Whether the document goes to Quern at `percent` (0 to 100): its bucket is below `percent × 100`, rounded.
 * Comparing two percentages tells which documents a change moved, e.g. to backfill into Quern what a legacy
 * worker wrote to a table of its own: `goesToQuern(c, d, next) && !goesToQuern(c, d, previous)`.
 */
export function goesToQuern(collection: string, documentId: string, percent: number): boolean {
  return cutoverBucket(collection, documentId) < threshold(checkPercent(percent, 'percent'));
}

const SEPARATOR = new Uint8Array([0]);

function hashable(value: unknown, name: string): void {
  if (typeof value !== 'string') throw new TypeError(`${name} must be a string, got ${typeof value}`);
  if (!value.isWellFormed()) throw new TypeError(`${name} contains a lone UTF-16 surrogate, which has no UTF-8 form`);
}

/** `percent` if it is a finite number from 0 to 100; a RangeError naming the option otherwise. */
export function checkPercent(percent: unknown, name: string): number {
  if (typeof percent !== 'number' || !Number.isFinite(percent) || percent < 0 || percent > 100) {
    const shown = typeof percent === 'string' ? JSON.stringify(percent) : String(percent);
    throw new RangeError(`${name} must be a number from 0 to 100, got ${shown}`);
  }
  return percent;
}

// Math.round rounds halves up, as the Rust and Python producers' floor(x + 0.5) does: 0.005% is bucket 0 alone.
function threshold(percent: number): number {
  return Math.round(percent * 100);
}

/**
 * A producer's routing: the percentage, changeable at run time, and the legacy functions. Routes are read once
 * per call, so a call in flight when the percentage changes goes entirely by the old one.
 */
export class Cutover<L, D> {
  private current = 100;
  private bucketsToQuern = CUTOVER_BUCKETS;

  constructor(
    percent: unknown,
    private readonly legacy: LegacyEnqueue<L> | undefined,
    private readonly legacyDelete: LegacyDelete<D> | undefined,
  ) {
    if (legacy !== undefined && typeof legacy !== 'function') {
      throw new TypeError(`legacy must be a function ({ collection, documentId, text, metadata }) => result`);
    }
    if (legacyDelete !== undefined && typeof legacyDelete !== 'function') {
      throw new TypeError(`legacyDelete must be a function ({ collection, documentId }) => result`);
    }
    this.percent = percent as number;
  }

  get percent(): number {
    return this.current;
  }

  set percent(percent: number) {
    checkPercent(percent, 'cutoverPercent');
    if (percent < 100 && this.legacy === undefined) {
      throw new TypeError(
        `cutoverPercent ${percent} sends the other documents to the legacy path: pass legacy ` +
          '(a function taking { collection, documentId, text, metadata })',
      );
    }
    this.current = percent;
    this.bucketsToQuern = threshold(percent);
  }

  /**
   * For each validated body, whether it goes to Quern. Checked before anything is sent: a delete on the legacy
   * side without `legacyDelete` throws here, so a batch holding one publishes nothing.
   */
  routes(bodies: readonly JobBody[]): boolean[] {
    const bucketsToQuern = this.bucketsToQuern;
    // At 100% nothing is hashed: the producer costs what it did before cut-overs existed.
    if (bucketsToQuern >= CUTOVER_BUCKETS) return bodies.map(() => true);
    const routes = bodies.map((b) => bucketsToQuern > 0 && cutoverBucket(b.collection, b.document_id) < bucketsToQuern);
    bodies.forEach((body, i) => {
      if (!routes[i] && body.op === 'delete' && this.legacyDelete === undefined) {
        throw new Error(
          `document ${JSON.stringify(body.document_id)} of collection ${JSON.stringify(body.collection)} is on the ` +
            `legacy path at cutoverPercent ${this.current}%: pass legacyDelete to Producer.connect to delete it there`,
        );
      }
    });
    return routes;
  }

  /** Hands one body routed to the legacy side to the legacy path; resolves to what that returned. */
  async handOver(body: JobBody): Promise<L | D> {
    if (body.op === 'delete') {
      // routes() refused a legacy-side delete without legacyDelete.
      return await this.legacyDelete!({ collection: body.collection, documentId: body.document_id });
    }
    // The percent setter refused a share below 100% without legacy.
    return await this.legacy!({
      collection: body.collection,
      documentId: body.document_id,
      text: body.text!,
      metadata: body.metadata ?? null,
    });
  }
}
