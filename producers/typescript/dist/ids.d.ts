/**
 * A new UUIDv7 job id: a 48-bit Unix millisecond timestamp, then a 12-bit counter (RFC 9562 method 1, started
 * at a random value below 2048 each millisecond, so it has room to grow), then 62 random bits. The clock going
 * back or more than 2048 ids in one millisecond borrow from the next millisecond rather than break the order.
 */
export declare function newJobId(): string;
/** When a UUIDv7 was made, in Unix milliseconds; undefined for other versions. */
export declare function jobIdTime(jobId: string): number | undefined;
/** Whether `value` is a W3C traceparent the worker will continue (version 00, lower case, non-zero ids). */
export declare function isTraceparent(value: unknown): value is string;
/** A fresh, sampled W3C traceparent: the root of a new trace, for a job whose caller is not tracing. */
export declare function newTraceparent(): string;
