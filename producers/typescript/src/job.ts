// The job contract v1 (README "Job contract v1", schema/job-v1.schema.json, crates/quern-core/src/job.rs):
// the wire body's type, the caller-facing input types, and validateJob, which accepts and rejects exactly
// what the worker does. test/contract.test.mjs holds these to the schema file and the shared examples.

/** Version of the contract this package speaks; sent in the `quern-contract` header. */
export const CONTRACT_VERSION = 1;
/** Inclusive bound on `collection`, in Unicode code points (what JSON Schema's `maxLength` counts). */
export const COLLECTION_MAX_CHARS = 128;
/** Inclusive bound on `document_id`, in Unicode code points. */
export const DOCUMENT_ID_MAX_CHARS = 512;
/** What a job asks for; `upsert` when absent. */
export const JOB_OPS = ['upsert', 'delete'] as const;
/** A hyphenated UUID, the only form the worker takes (no braces, no `urn:`, no bare hex). */
export const JOB_ID_PATTERN = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;

export type JobOp = (typeof JOB_OPS)[number];

/** Any JSON value. */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };
/** A JSON object: what `metadata` must be. */
export type JsonObject = { [key: string]: JsonValue };

/**
 * The message body as published, field for field the schema's properties (snake_case, as on the wire).
 * `text` is required unless `op` is `delete`; validateJob enforces that.
 */
export interface JobBody {
  job_id: string;
  collection: string;
  document_id: string;
  text?: string;
  metadata?: JsonObject | null;
  op?: JobOp;
}

/** Fields every job input has. */
export interface JobInputBase {
  /** 1..=128 characters. */
  collection: string;
  /** 1..=512 characters. */
  documentId: string;
  /**
   * A hyphenated UUID; a fresh UUIDv7 when absent. Pass the id of a job whose enqueue failed to send it again
   * safely: the worker treats a job id it already finished as done.
   */
  jobId?: string;
}

/** Insert a document, or replace all of its chunks atomically. */
export interface UpsertInput extends JobInputBase {
  op?: 'upsert';
  text: string;
  /** Stored beside the document. */
  metadata?: JsonObject | null;
}

/** Remove a document and all of its chunks. */
export interface DeleteInput extends JobInputBase {
  op: 'delete';
}

export type JobInput = UpsertInput | DeleteInput;

/**
 * A job that breaks the contract; nothing was published. A `TypeError`, so code that treats bad arguments
 * generically still does; `field` names the contract field at fault (`null` when the body is not an object).
 */
export class InvalidJobError extends TypeError {
  override name = 'InvalidJobError';
  /** The contract field at fault, as named on the wire (`document_id`, not `documentId`). */
  readonly field: string | null;
  /** What is wrong with it. */
  readonly reason: string;
  /** The job's id, when it had a usable one. */
  readonly jobId: string | undefined;

  constructor(field: string | null, reason: string, jobId?: string) {
    const where = field === null ? reason : `field \`${field}\`: ${reason}`;
    super(jobId === undefined ? `invalid job: ${where}` : `job ${jobId} is invalid: ${where}`);
    this.field = field;
    this.reason = reason;
    this.jobId = jobId;
  }
}

/**
 * Checks a wire body (snake_case, as in schema/examples) against the contract and returns it typed; throws an
 * InvalidJobError naming the field otherwise. Undefined properties count as absent, since JSON.stringify
 * drops them; null is a value, and rejected wherever the worker rejects it.
 */
export function validateJob(body: unknown): JobBody {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new InvalidJobError(null, `the job must be a JSON object, not ${describe(body)}`);
  }
  const b = body as Record<string, unknown>;
  const jobId = typeof b.job_id === 'string' && JOB_ID_PATTERN.test(b.job_id) ? b.job_id : undefined;
  const fail = (field: string, reason: string): never => {
    throw new InvalidJobError(field, reason, jobId);
  };

  if (b.job_id === undefined) fail('job_id', 'missing');
  if (typeof b.job_id !== 'string') fail('job_id', `must be a string, not ${describe(b.job_id)}`);
  if (jobId === undefined) fail('job_id', `${describe(b.job_id)} is not a hyphenated UUID (8-4-4-4-12 hex digits)`);
  checkName(b, 'collection', COLLECTION_MAX_CHARS, fail);
  checkName(b, 'document_id', DOCUMENT_ID_MAX_CHARS, fail);

  if (b.op !== undefined && !(JOB_OPS as readonly unknown[]).includes(b.op)) {
    fail('op', `must be "upsert" or "delete", not ${describe(b.op)}`);
  }
  if (b.text === undefined) {
    if (b.op !== 'delete') fail('text', 'missing (required when op is upsert)');
  } else if (typeof b.text !== 'string') {
    fail('text', `must be a string, not ${describe(b.text)}`);
  } else if (!b.text.isWellFormed()) {
    fail('text', LONE_SURROGATE);
  }

  if (b.metadata !== undefined && b.metadata !== null) {
    checkMetadata(b.metadata, fail);
  }
  return b as unknown as JobBody;
}

/** The validated wire body of a caller's camelCase input; its job id is the caller's `jobId`, else `newJobId()`. */
export function toJobBody(input: unknown, newJobId: () => string): JobBody {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw new InvalidJobError(null, `the job must be an object, not ${describe(input)}`);
  }
  const job = input as Record<string, unknown>;
  // Upper-case ids are valid, but the worker and quern_jobs spell them in lower case: so does the returned id.
  const jobId =
    job.jobId === undefined ? newJobId() : typeof job.jobId === 'string' ? job.jobId.toLowerCase() : job.jobId;
  const body: Record<string, unknown> = { job_id: jobId, collection: job.collection, document_id: job.documentId };
  if (job.op === 'delete') {
    body.op = 'delete';
  } else {
    body.text = job.text;
    if (job.metadata !== undefined) body.metadata = job.metadata;
    if (job.op !== undefined) body.op = job.op;
  }
  return validateJob(body);
}

const LONE_SURROGATE =
  'contains a lone UTF-16 surrogate, which is not Unicode text (the worker could not decode the body)';

function checkName(
  b: Record<string, unknown>,
  field: string,
  max: number,
  fail: (field: string, reason: string) => never,
): void {
  const value = b[field];
  if (value === undefined) fail(field, 'missing');
  if (typeof value !== 'string') fail(field, `must be a string, not ${describe(value)}`);
  const s = value as string;
  if (s.length === 0) fail(field, 'must not be empty');
  // UTF-16 length bounds the code point count from above, so only long strings need counting.
  if (s.length > max) {
    const chars = codePoints(s);
    if (chars > max) fail(field, `is ${chars} characters long, the limit is ${max}`);
  }
  if (!s.isWellFormed()) fail(field, LONE_SURROGATE);
}

/** Unicode code points in `s` (a surrogate pair is one), as Rust's `chars().count()` and JSON Schema count. */
export function codePoints(s: string): number {
  let count = 0;
  for (let i = 0; i < s.length; i++) {
    const unit = s.charCodeAt(i);
    if (unit >= 0xd800 && unit <= 0xdbff && i + 1 < s.length) {
      const next = s.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) i++;
    }
    count++;
  }
  return count;
}

// An odd run of backslashes, then a \uD800-\uDFFF escape: JSON.stringify writes lone surrogates that way and
// never escapes a well-formed pair, so this finds exactly the strings the worker's JSON parser refuses.
const LONE_SURROGATE_ESCAPE = /(?<!\\)(?:\\\\)*\\u[dD][89a-fA-F][0-9a-fA-F]{2}/;

function checkMetadata(metadata: unknown, fail: (field: string, reason: string) => never): void {
  let json: string | undefined;
  try {
    json = JSON.stringify(metadata);
  } catch (error) {
    fail('metadata', `cannot be serialised as JSON: ${(error as Error).message}`);
  }
  // What the worker sees is the serialised form: a Date or an array would arrive as a string or an array.
  if (json === undefined || !json.startsWith('{')) {
    fail('metadata', `must be a JSON object or null, not ${describe(metadata)}`);
  }
  if (LONE_SURROGATE_ESCAPE.test(json as string)) fail('metadata', LONE_SURROGATE);
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'string')
    return `the string ${JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value)}`;
  if (typeof value === 'object') return `an object (${Object.prototype.toString.call(value).slice(8, -1)})`;
  return `${typeof value} ${String(value)}`;
}
