// TLS for amqps:// URLs, from the query parameters of RabbitMQ's own (Erlang) client, as the Rust workers and CLI
// read them (crates/quern-queue/src/tls.rs), so that one QUERN_AMQP_URL serves every binary and producer:
//
//   cacertfile              PEM file of the CAs to trust, and only those; without it, Node's own CA list
//                           (Mozilla's, plus NODE_EXTRA_CA_CERTS)
//   certfile, keyfile       a PEM client certificate and its unencrypted key, both or neither
//   verify                  verify_peer (the default) or verify_none (no check of the broker's certificate)
//   server_name_indication  the name sent and checked instead of the URL's host
//
// amqplib ignores query parameters it does not know, so the URL reaches it as it is; these become the options
// of its tls.connect. Files are read once, when the producer connects first.
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { checkServerIdentity } from 'node:tls';
const PARAMETERS = ['cacertfile', 'certfile', 'keyfile', 'verify', 'server_name_indication'];
/** The TLS socket options of `url` for amqplib's `connect`: none for amqp://. Throws a TypeError naming the
 * parameter that is wrong, or the file that cannot be read. */
export function tlsOptions(url) {
    const parsed = new URL(url);
    const found = new Map();
    for (const [key, value] of parsed.searchParams) {
        if (!PARAMETERS.includes(key))
            continue;
        if (parsed.protocol !== 'amqps:') {
            throw new TypeError(`${key} needs an amqps:// URL (amqp:// is never encrypted)`);
        }
        if (found.has(key))
            throw new TypeError(`${key} is given twice`);
        if (value === '')
            throw new TypeError(`${key} is empty`);
        found.set(key, value);
    }
    const options = {};
    const verify = found.get('verify') ?? 'verify_peer';
    if (verify !== 'verify_peer' && verify !== 'verify_none') {
        throw new TypeError(`verify must be verify_peer or verify_none, not '${verify}'`);
    }
    if (verify === 'verify_none')
        options.rejectUnauthorized = false;
    const name = found.get('server_name_indication');
    if (name === 'disable') {
        throw new TypeError("server_name_indication=disable is not supported: give the name the broker's certificate is for, or " +
            "leave the parameter out to use the URL's host");
    }
    if (name !== undefined) {
        // Node sends no IP address as SNI (RFC 6066); the certificate is checked against the name either way.
        if (isIP(name) === 0)
            options.servername = name;
        options.checkServerIdentity = (_host, cert) => checkServerIdentity(name, cert);
    }
    const certfile = found.get('certfile');
    const keyfile = found.get('keyfile');
    if ((certfile === undefined) !== (keyfile === undefined)) {
        throw new TypeError(certfile === undefined ? 'keyfile is given without certfile' : 'certfile is given without keyfile');
    }
    const cacertfile = found.get('cacertfile');
    // With `ca`, only those CAs are trusted.
    if (cacertfile !== undefined)
        options.ca = read('cacertfile', cacertfile);
    if (certfile !== undefined && keyfile !== undefined) {
        options.cert = read('certfile', certfile);
        options.key = read('keyfile', keyfile);
    }
    return options;
}
function read(key, path) {
    try {
        return readFileSync(path);
    }
    catch (error) {
        const code = error.code;
        throw new TypeError(`cannot read ${key} ${path}: ${code === 'ENOENT' ? 'no such file' : String(error)}`);
    }
}
// OpenSSL's codes for a broker certificate that failed the checks, as Node reports them.
const REFUSED_CERTIFICATE = new Set([
    'SELF_SIGNED_CERT_IN_CHAIN',
    'DEPTH_ZERO_SELF_SIGNED_CERT',
    'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
    'UNABLE_TO_GET_ISSUER_CERT',
    'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
    'CERT_HAS_EXPIRED',
    'CERT_NOT_YET_VALID',
    'CERT_UNTRUSTED',
    'ERR_TLS_CERT_ALTNAME_INVALID',
]);
/**
 * A TLS failure in an operator's words, or undefined when `error` is not one. `tls` says whether the connection
 * was a TLS one: a reset as it opens then most likely means a client certificate the broker wants or refuses.
 */
export function describeTlsError(error, tls = true) {
    const { code, message } = (error ?? {});
    if (typeof code === 'string' && REFUSED_CERTIFICATE.has(code)) {
        return (`TLS failed: the broker's certificate was refused: ${String(message)} (is the broker's CA in cacertfile, ` +
            "and the URL's host, or server_name_indication, a name of its certificate?)");
    }
    if (typeof code === 'string' && code.startsWith('ERR_SSL_') && code.includes('ALERT')) {
        return `TLS failed: the broker refused the connection (${code}): does it want a client certificate?`;
    }
    if (typeof code === 'string' && (code.startsWith('ERR_SSL_') || code.startsWith('ERR_TLS_'))) {
        return `TLS failed: ${String(message)}`;
    }
    // TLS 1.3: the broker checks the client's certificate after the client's handshake is done, so its alert races
    // the client's first write, and the client may see the connection reset instead.
    const reset = (typeof code === 'string' && ['ECONNRESET', 'EPIPE', 'ECONNABORTED'].includes(code)) ||
        /Socket closed abruptly/.test(String(message));
    if (tls && reset) {
        return (`TLS failed: the broker closed the connection as it opened (${String(message)}): does it want a client ` +
            'certificate (certfile and keyfile), or refuse the one given?');
    }
    return undefined;
}
