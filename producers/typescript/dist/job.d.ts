/** Version of the contract this package speaks; sent in the `quern-contract` header. */
export declare const CONTRACT_VERSION = 1;
/** Inclusive bound on `collection`, in Unicode code points (what JSON Schema's `maxLength` counts). */
export declare const COLLECTION_MAX_CHARS = 128;
/** Inclusive bound on `document_id`, in Unicode code points. */
export declare const DOCUMENT_ID_MAX_CHARS = 512;
/** What a job asks for; `upsert` when absent. */
export declare const JOB_OPS: readonly ["upsert", "delete"];
/** A hyphenated UUID, the only form the worker takes (no braces, no `urn:`, no bare hex). */
export declare const JOB_ID_PATTERN: RegExp;
export type JobOp = (typeof JOB_OPS)[number];
/** Any JSON value. */
export type JsonValue = string | number | boolean | null | JsonValue[] | {
    [key: string]: JsonValue;
};
/** A JSON object: what `metadata` must be. */
export type JsonObject = {
    [key: string]: JsonValue;
};
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
export declare class InvalidJobError extends TypeError {
    name: string;
    /** The contract field at fault, as named on the wire (`document_id`, not `documentId`). */
    readonly field: string | null;
    /** What is wrong with it. */
    readonly reason: string;
    /** The job's id, when it had a usable one. */
    readonly jobId: string | undefined;
    constructor(field: string | null, reason: string, jobId?: string);
}
/**
 * Checks a wire body (snake_case, as in schema/examples) against the contract and returns it typed; throws an
 * InvalidJobError naming the field otherwise. Undefined properties count as absent, since JSON.stringify
 * drops them; null is a value, and rejected wherever the worker rejects it.
 */
export declare function validateJob(body: unknown): JobBody;
/** The validated wire body of a caller's camelCase input; its job id is the caller's `jobId`, else `newJobId()`. */
export declare function toJobBody(input: unknown, newJobId: () => string): JobBody;
/** Unicode code points in `s` (a surrogate pair is one), as Rust's `chars().count()` and JSON Schema count. */
export declare function codePoints(s: string): number;
