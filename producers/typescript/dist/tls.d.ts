import { type ConnectionOptions } from 'node:tls';
/** The TLS socket options of `url` for amqplib's `connect`: none for amqp://. Throws a TypeError naming the
 * parameter that is wrong, or the file that cannot be read. */
export declare function tlsOptions(url: string): ConnectionOptions;
/**
 * A TLS failure in an operator's words, or undefined when `error` is not one. `tls` says whether the connection
 * was a TLS one: a reset as it opens then most likely means a client certificate the broker wants or refuses.
 */
export declare function describeTlsError(error: unknown, tls?: boolean): string | undefined;
