// Producer: validate, publish with publisher confirms, reconnect on the next call after a lost connection.
// The TypeScript twin of crates/quern-producer/src/producer.rs: same message properties and headers, same
// topology, same rule that a job id is returned only once the broker has confirmed the message.
import * as amqp from 'amqplib';
import { Cutover } from './cutover.js';
import { newJobId, isTraceparent, newTraceparent } from './ids.js';
import { CONTRACT_VERSION, toJobBody } from './job.js';
import { describeTlsError, tlsOptions } from './tls.js';
import { declareTopology, topology } from './topology.js';
/**
 * The broker did not confirm a job. Jobs listed in `unconfirmedJobIds` may or may not be queued: enqueue them
 * again with the same `jobId` (the worker treats a job id it already finished as done).
 */
export class BrokerError extends Error {
    name = 'BrokerError';
    code;
    /** The first job the failure is known to concern, if any. */
    jobId;
    /** Every job of the call that the broker did not confirm. */
    unconfirmedJobIds;
    constructor(code, message, options = {}) {
        super(message, options.cause === undefined ? undefined : { cause: options.cause });
        this.code = code;
        this.unconfirmedJobIds = options.jobIds ?? [];
        this.jobId = this.unconfirmedJobIds[0];
    }
}
const APP_ID = 'quern-producer';
const CONTRACT_HEADER = 'quern-contract';
const TRACEPARENT_HEADER = 'traceparent';
/**
 * One connection and its confirm channel. Dead once either closes or errs; the producer then opens another on
 * its next call, never in the background, so a broker that is down costs nothing between calls.
 */
class Session {
    connection;
    channel;
    alive = true;
    /** Why the session died, for the calls that were waiting on it. */
    lastError;
    /** Message ids the broker handed back as unroutable; the ack that follows each return consults this. */
    returned = new Map();
    /** Settles the publishes in flight when the session dies (amqplib's own callbacks do on a channel close). */
    onDeath = new Set();
    /** The connection's close, once begun: closing twice is one close. */
    closing;
    constructor(connection, channel) {
        this.connection = connection;
        this.channel = channel;
        // amqplib emits 'error' before 'close' on a broker-initiated close; without a listener, Node would throw
        // the error out of the event loop and kill the caller's process.
        connection.on('error', (error) => this.die(error));
        connection.on('close', (error) => this.die(error));
        channel.on('error', (error) => this.die(error));
        channel.on('close', () => this.die(undefined));
        channel.on('return', (message) => {
            const { replyCode, replyText } = message.fields;
            this.returned.set(String(message.properties.messageId), `${replyCode ?? ''} ${replyText ?? 'returned'}`.trim());
        });
    }
    /** Marks the session dead, fails what waits on it, and releases the connection. */
    die(error) {
        if (error !== undefined)
            this.lastError ??= error;
        if (!this.alive)
            return;
        this.alive = false;
        const reason = this.lastError ?? new Error('connection closed');
        for (const settle of this.onDeath)
            settle(reason);
        this.onDeath.clear();
        // A channel the broker closed leaves its connection open: release it, the next call opens a new one.
        void this.closeConnection();
    }
    closeConnection() {
        this.closing ??= this.connection.close().catch(() => {
            // Already closed, or the socket is gone: nothing left to release.
        });
        return this.closing;
    }
    /**
     * Publishes one message; resolves `writable` false when amqplib's buffer is full (wait for drain before
     * publishing more), and `confirmed` once the broker acked it, nacked it, returned it or the session died.
     */
    publish(exchange, routingKey, body, properties, jobId) {
        let writable = true;
        const confirmed = new Promise((resolve) => {
            const fail = (code, message, cause) => resolve({ ok: false, error: new BrokerError(code, message, { jobIds: [jobId], cause }) });
            const lost = (error) => fail('CONNECTION_LOST', `job ${jobId} not confirmed: the connection to RabbitMQ was lost (${error.message})`, error);
            if (!this.alive) {
                lost(this.lastError ?? new Error('connection closed'));
                return;
            }
            this.onDeath.add(lost);
            try {
                writable = this.channel.publish(exchange, routingKey, body, properties, (error) => {
                    this.onDeath.delete(lost);
                    const returned = this.returned.get(jobId);
                    this.returned.delete(jobId);
                    if (error !== null && error !== undefined) {
                        // A nack says "message nacked"; a channel that closed says "channel closed".
                        if (/nack/i.test(String(error.message))) {
                            fail('NACKED', `RabbitMQ refused job ${jobId} (nack): the queue may be full`, error);
                        }
                        else {
                            lost(this.lastError ?? error);
                        }
                    }
                    else if (returned !== undefined) {
                        fail('UNROUTABLE', `job ${jobId} was unroutable: no queue bound to \`${exchange}\` for \`${routingKey}\` (${returned})`);
                    }
                    else {
                        resolve({ ok: true });
                    }
                });
            }
            catch (error) {
                // amqplib throws at once when the channel is already closed (IllegalOperationError).
                this.onDeath.delete(lost);
                lost(error);
            }
        });
        return { writable, confirmed };
    }
    /** Resolves when amqplib's write buffer has room again, or the session died. */
    drained() {
        return new Promise((resolve) => {
            if (!this.alive)
                return resolve();
            const done = () => {
                this.channel.off('drain', done);
                this.onDeath.delete(done);
                resolve();
            };
            this.channel.once('drain', done);
            this.onDeath.add(done);
        });
    }
    /** Closes the connection; whatever still waits on it fails as a lost connection. */
    async close() {
        this.die(new Error('connection closed by the producer'));
        await this.closeConnection();
    }
}
let otelLookup;
function loadOpenTelemetry() {
    // A variable specifier keeps the optional package out of TypeScript's and bundlers' sight: it is never a
    // dependency, only used when present.
    const specifier = '@opentelemetry/api';
    otelLookup ??= import(specifier).then((api) => () => {
        const span = api.trace.getSpanContext(api.context.active());
        if (span === undefined || !api.isSpanContextValid(span))
            return undefined;
        return `00-${span.traceId}-${span.spanId}-${(span.traceFlags & 0xff).toString(16).padStart(2, '0')}`;
    }, () => () => undefined);
    return otelLookup;
}
/** `amqp://user:***@host/vhost`: URLs are logged and put in errors, passwords never. */
export function redactUrl(url) {
    try {
        const parsed = new URL(url);
        if (parsed.password !== '')
            parsed.password = '***';
        return parsed.toString();
    }
    catch {
        return '<unparseable AMQP URL>';
    }
}
/**
 * Publishes Quern jobs to RabbitMQ. Create one per process with `Producer.connect` and share it: calls may
 * overlap, and all of them use one connection and one confirm channel. `L` and `D` are what the legacy
 * functions of a cut-over resolve to (`never` without them, so calls resolve to job ids alone).
 */
export class Producer {
    /** The exchange and queues this producer publishes to. */
    topology;
    url;
    /** amqplib's TLS options, from the URL's query (see tls.ts); none for amqp://. */
    tls;
    confirmTimeoutMs;
    connectTimeoutMs;
    connectionName;
    activeTraceparent;
    session;
    opening;
    closed = false;
    cutover;
    /** Calls between validation and their last confirm or legacy call. */
    inFlight = new Set();
    constructor(url, tls, options, cutover, activeTraceparent) {
        this.url = url;
        this.tls = tls;
        this.cutover = cutover;
        this.topology = topology(options.queuePrefix);
        this.confirmTimeoutMs = options.confirmTimeoutMs;
        this.connectTimeoutMs = options.connectTimeoutMs;
        this.connectionName = options.connectionName;
        this.activeTraceparent = activeTraceparent;
    }
    /**
     * Connects, declares the topology (idempotently) and enables publisher confirms. The options are checked
     * before connecting: a bad `cutoverPercent`, or one below 100 without `legacy`, rejects at once.
     */
    static async connect(amqpUrl, options = {}) {
        if (typeof amqpUrl !== 'string' || !/^amqps?:\/\//.test(amqpUrl)) {
            throw new TypeError(`the AMQP URL must start with amqp:// or amqps://, got ${redactUrl(String(amqpUrl))}`);
        }
        let tls;
        try {
            tls = tlsOptions(amqpUrl);
        }
        catch (error) {
            throw new TypeError(`the AMQP URL ${redactUrl(amqpUrl)}: ${error.message}`);
        }
        const settings = {
            queuePrefix: options.queuePrefix ?? 'quern',
            confirmTimeoutMs: positive(options.confirmTimeoutMs, 30_000, 'confirmTimeoutMs'),
            connectTimeoutMs: positive(options.connectTimeoutMs, 10_000, 'connectTimeoutMs'),
            connectionName: options.connectionName ?? APP_ID,
        };
        // Only an absent cutoverPercent means 100: null or NaN is a mistake to report, not a default to apply.
        const cutover = new Cutover(options.cutoverPercent === undefined ? 100 : options.cutoverPercent, options.legacy ?? undefined, options.legacyDelete ?? undefined);
        const producer = new Producer(amqpUrl, tls, settings, cutover, await loadOpenTelemetry());
        await producer.live();
        return producer;
    }
    /** The share of documents sent to Quern, 0 to 100; the others go through `legacy`. */
    get cutoverPercent() {
        return this.cutover.percent;
    }
    /**
     * Changes the share of documents sent to Quern, checked as at connect; calls made from now on follow it.
     * 0 sends every document back to the legacy path at once; raising it moves only the documents whose bucket
     * lies between the old and the new threshold, and none back.
     */
    setCutoverPercent(percent) {
        this.cutover.percent = percent;
    }
    /**
     * Validates and publishes one job; resolves to its id once the broker has confirmed it. During a cut-over, a
     * document on the legacy side is handed to `legacy` (or `legacyDelete`) instead, and the call resolves to
     * what that returned.
     */
    async enqueue(job, options = {}) {
        const [result] = await this.enqueueMany([job], options);
        return result;
    }
    /**
     * Enqueues the deletion of a document and all of its chunks; resolves to the job id once confirmed, or to
     * what `legacyDelete` returned for a document on the legacy side.
     */
    delete(document, options = {}) {
        return this.enqueue({ ...document, op: 'delete' }, options);
    }
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
    async enqueueMany(jobs, options = {}) {
        if (!Array.isArray(jobs))
            throw new TypeError('enqueueMany takes an array of jobs');
        const bodies = jobs.map((job) => toJobBody(job, newJobId));
        if (bodies.length === 0)
            return [];
        const routes = this.cutover.routes(bodies);
        // close() waits for the calls in flight, so that a job handed to enqueue before close() is not dropped.
        const call = this.dispatch(bodies, routes, options);
        this.inFlight.add(call);
        try {
            return await call;
        }
        finally {
            this.inFlight.delete(call);
        }
    }
    /**
     * Publishes the Quern share, then hands the rest to the legacy path. Quern first: if the broker fails, the
     * caller sends the whole call again, and the legacy path, which may not be idempotent, has not seen it yet.
     */
    async dispatch(bodies, routes, options) {
        const quern = bodies.filter((_, i) => routes[i]);
        // Closed is closed on both sides: a legacy-side call after close() fails as a Quern-side one does.
        if (this.closed)
            throw new BrokerError('CLOSED', 'the producer is closed', { jobIds: quern.map((b) => b.job_id) });
        if (quern.length > 0) {
            const encoded = quern.map((body) => ({ jobId: body.job_id, content: Buffer.from(JSON.stringify(body)) }));
            await this.publish(encoded, options);
        }
        const results = [];
        // One at a time, in order: an upsert then a delete of one document must reach the legacy path that way.
        for (const [i, body] of bodies.entries()) {
            results.push(routes[i] ? body.job_id : await this.cutover.handOver(body));
        }
        return results;
    }
    async publish(encoded, options) {
        const jobIds = encoded.map((e) => e.jobId);
        const session = await this.live(jobIds);
        const traceparent = isTraceparent(options.traceparent) ? options.traceparent.trim() : this.activeTraceparent();
        // The timestamp property is in seconds, as AMQP and the Rust producer have it.
        const timestamp = Math.floor(Date.now() / 1000);
        const confirms = [];
        for (const { jobId, content } of encoded) {
            const properties = {
                mandatory: true,
                persistent: true,
                contentType: 'application/json',
                messageId: jobId,
                timestamp,
                appId: APP_ID,
                headers: {
                    [CONTRACT_HEADER]: { '!': 'long', value: CONTRACT_VERSION },
                    [TRACEPARENT_HEADER]: traceparent ?? newTraceparent(),
                },
            };
            const { writable, confirmed } = session.publish(this.topology.workExchange, this.topology.ingestRoutingKey, content, properties, jobId);
            confirms.push(confirmed);
            // amqplib buffers whatever it is given; waiting for drain keeps a huge batch from piling up in memory.
            if (!writable)
                await session.drained();
        }
        await this.settle(session, jobIds, confirms);
    }
    /**
     * Closes the connection once the publishes in flight are settled. Later calls fail with code CLOSED.
     * Safe to call twice.
     */
    async close() {
        this.closed = true;
        await Promise.allSettled([...this.inFlight]);
        const session = this.session ?? (await this.opening?.catch(() => undefined));
        this.session = undefined;
        if (session !== undefined && session.alive) {
            try {
                // The broker answers the channel's close after the confirms of everything published before it.
                await session.channel.close();
            }
            catch {
                // The channel died meanwhile: its publishes have already failed.
            }
        }
        await session?.close();
    }
    /** Waits for every confirm of a call, up to the timeout, and throws one BrokerError for what failed. */
    async settle(session, jobIds, confirms) {
        let timer;
        const timeout = new Promise((resolve) => {
            timer = setTimeout(() => resolve('timeout'), this.confirmTimeoutMs);
        });
        // Record outcomes as they arrive, so that on a timeout the ones already confirmed are known.
        const outcomes = new Array(confirms.length);
        confirms.forEach((confirm, i) => confirm.then((outcome) => (outcomes[i] = outcome)));
        const all = Promise.all(confirms);
        const result = await Promise.race([all, timeout]);
        clearTimeout(timer);
        const unconfirmed = jobIds.filter((_, i) => outcomes[i]?.ok !== true);
        if (unconfirmed.length === 0)
            return;
        if (result === 'timeout') {
            // A broker that has not confirmed in this long is wedged, or the TCP connection is half-open and the
            // heartbeat has yet to notice: start afresh on the next call rather than wait on this connection again.
            this.forget(session);
            void session.close();
            throw new BrokerError('CONFIRM_TIMEOUT', `RabbitMQ did not confirm ${unconfirmed.length} of ${jobIds.length} job(s) within ${this.confirmTimeoutMs} ms`, { jobIds: unconfirmed });
        }
        const first = outcomes.find((o) => o !== undefined && !o.ok).error;
        if (!session.alive)
            this.forget(session);
        const others = unconfirmed.length > 1 ? ` (${unconfirmed.length} of ${jobIds.length} jobs not confirmed)` : '';
        throw new BrokerError(first.code, `${first.message}${others}`, { jobIds: unconfirmed, cause: first.cause });
    }
    /** The live session, opening one (shared by concurrent callers) when there is none or it died. */
    async live(jobIds = []) {
        if (this.closed)
            throw new BrokerError('CLOSED', 'the producer is closed', { jobIds });
        if (this.session?.alive)
            return this.session;
        this.session = undefined;
        this.opening ??= this.open().finally(() => {
            this.opening = undefined;
        });
        try {
            const session = await this.opening;
            if (this.closed) {
                await session.close();
                throw new BrokerError('CLOSED', 'the producer is closed', { jobIds });
            }
            this.session = session;
            return session;
        }
        catch (error) {
            if (error instanceof BrokerError && error.code === 'CLOSED')
                throw error;
            throw new BrokerError('CONNECT', error.message, { jobIds, cause: error.cause ?? error });
        }
    }
    forget(session) {
        if (this.session === session)
            this.session = undefined;
    }
    async open() {
        const where = redactUrl(this.url);
        let connection;
        try {
            connection = await amqp.connect(this.url, {
                ...this.tls,
                timeout: this.connectTimeoutMs,
                clientProperties: { connection_name: this.connectionName },
            });
        }
        catch (error) {
            const tls = describeTlsError(error, this.url.startsWith('amqps:'));
            throw new Error(`cannot connect to RabbitMQ at ${where}: ${tls ?? describeError(error)}`, { cause: error });
        }
        // Until the session owns them, a broker-side close would emit 'error' with no listener: keep one.
        const early = () => { };
        connection.on('error', early);
        try {
            const channel = await connection.createConfirmChannel();
            channel.on('error', early);
            await declareTopology(channel, this.topology);
            return new Session(connection, channel);
        }
        catch (error) {
            await connection.close().catch(() => { });
            throw new Error(`cannot open a channel and declare Quern's queues on RabbitMQ at ${where}: ${describeError(error)}`, {
                cause: error,
            });
        }
    }
}
function describeError(error) {
    // Node reports a refused connection to a name with several addresses as an AggregateError with no message.
    const e = error;
    if (e?.message)
        return e.message;
    if (Array.isArray(e?.errors) && e.errors.length > 0)
        return e.errors.map(describeError).join('; ');
    return String(e?.code ?? error);
}
function positive(value, fallback, name) {
    if (value === undefined)
        return fallback;
    if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
        throw new TypeError(`${name} must be a positive number of milliseconds, got ${String(value)}`);
    }
    return value;
}
