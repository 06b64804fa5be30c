// Job ids and trace ids. Job ids are UUIDv7 (RFC 9562), like the Rust producer's: the worker orders two jobs
// for one document by the time in their ids, then by id, so ids made by one process must also increase
// within a millisecond, or an upsert and a delete sent back to back could be applied in the wrong order.
import { randomBytes } from 'node:crypto';
// Random bytes are drawn in blocks: one getrandom call per 256 ids instead of one per id.
let pool = Buffer.alloc(0);
let poolOffset = 0;
function random(n) {
    if (poolOffset + n > pool.length) {
        pool = randomBytes(4096);
        poolOffset = 0;
    }
    const bytes = pool.subarray(poolOffset, poolOffset + n);
    poolOffset += n;
    return bytes;
}
const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));
function hex(bytes) {
    let out = '';
    for (const byte of bytes)
        out += HEX[byte];
    return out;
}
let lastMs = 0;
let counter = 0;
/**
 * A new UUIDv7 job id: a 48-bit Unix millisecond timestamp, then a 12-bit counter (RFC 9562 method 1, started
 * at a random value below 2048 each millisecond, so it has room to grow), then 62 random bits. The clock going
 * back or more than 2048 ids in one millisecond borrow from the next millisecond rather than break the order.
 */
export function newJobId() {
    const now = Date.now();
    const rand = random(10);
    if (now > lastMs) {
        lastMs = now;
        counter = ((rand[0] << 8) | rand[1]) & 0x7ff;
    }
    else if (++counter > 0xfff) {
        lastMs++;
        counter = 0;
    }
    const bytes = new Uint8Array(16);
    // 48-bit big-endian milliseconds: the high 16 bits, then the low 32 (bitwise operators stop at 32 bits).
    const high = Math.floor(lastMs / 2 ** 32);
    const low = lastMs >>> 0;
    bytes[0] = (high >>> 8) & 0xff;
    bytes[1] = high & 0xff;
    bytes[2] = low >>> 24;
    bytes[3] = (low >>> 16) & 0xff;
    bytes[4] = (low >>> 8) & 0xff;
    bytes[5] = low & 0xff;
    bytes[6] = 0x70 | (counter >>> 8); // version 7
    bytes[7] = counter & 0xff;
    bytes[8] = 0x80 | (rand[2] & 0x3f); // variant 10
    bytes.set(rand.subarray(3, 10), 9);
    const h = hex(bytes);
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
/** When a UUIDv7 was made, in Unix milliseconds; undefined for other versions. */
export function jobIdTime(jobId) {
    const h = jobId.replaceAll('-', '');
    if (h.length !== 32 || h[12] !== '7')
        return undefined;
    return Number.parseInt(h.slice(0, 12), 16);
}
const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$/;
/** Whether `value` is a W3C traceparent the worker will continue (version 00, lower case, non-zero ids). */
export function isTraceparent(value) {
    if (typeof value !== 'string')
        return false;
    const match = TRACEPARENT.exec(value.trim());
    return match !== null && !/^0+$/.test(match[1]) && !/^0+$/.test(match[2]);
}
/** A fresh, sampled W3C traceparent: the root of a new trace, for a job whose caller is not tracing. */
export function newTraceparent() {
    const bytes = random(24);
    // All-zero ids are invalid; 2^-64 odds, but cheap to rule out.
    if (bytes.subarray(16, 24).every((b) => b === 0))
        bytes[23] = 1;
    if (bytes.subarray(0, 16).every((b) => b === 0))
        bytes[15] = 1;
    return `00-${hex(bytes.subarray(0, 16))}-${hex(bytes.subarray(16, 24))}-01`;
}
