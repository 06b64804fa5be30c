// The contract, without a broker: the shared examples (schema/examples) through validateJob, the package's
// limits and types held to schema/job-v1.schema.json and to the Rust constants, job ids and traceparents.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';

import ts from 'typescript';

import {
  COLLECTION_MAX_CHARS,
  CONTRACT_VERSION,
  DELIVERY_LIMIT,
  DOCUMENT_ID_MAX_CHARS,
  InvalidJobError,
  JOB_ID_PATTERN,
  JOB_OPS,
  codePoints,
  ingestQueueArguments,
  deadQueueArguments,
  isTraceparent,
  jobIdTime,
  newJobId,
  newTraceparent,
  topology,
  validateJob,
} from '@quern/producer';

import { PACKAGE_DIR, REPO_ROOT } from './harness.mjs';

const read = (path) => readFileSync(join(REPO_ROOT, path), 'utf8');
const schema = JSON.parse(read('schema/job-v1.schema.json'));
const accepted = JSON.parse(read('schema/examples/accepted.json'));
const rejected = JSON.parse(read('schema/examples/rejected.json'));
const FIELDS = Object.keys(schema.properties);

/** The contract field an example's name mentions ("empty collection" → collection), if exactly one. */
function fieldNamed(name) {
  const named = FIELDS.filter((field) => new RegExp(`(^|\\s)${field}(\\s|$)`).test(name));
  return named.length === 1 ? named[0] : undefined;
}

describe('the shared examples', () => {
  test('are there', () => {
    assert.ok(accepted.length > 5 && rejected.length > 5);
  });

  for (const { name, body } of accepted) {
    test(`accepts: ${name}`, () => {
      assert.equal(validateJob(structuredClone(body)).job_id, body.job_id);
    });
  }

  for (const { name, body } of rejected) {
    test(`rejects: ${name}`, () => {
      const field = fieldNamed(name);
      assert.throws(
        () => validateJob(structuredClone(body)),
        (error) => {
          assert.ok(error instanceof InvalidJobError, `${error}`);
          assert.ok(error instanceof TypeError);
          if (field !== undefined) {
            assert.equal(error.field, field, error.message);
            assert.match(error.message, new RegExp(`\`${field}\``));
          }
          return true;
        },
      );
    });
  }
});

describe('the package agrees with schema/job-v1.schema.json', () => {
  test('limits, pattern, ops and required fields', () => {
    const { properties } = schema;
    assert.deepEqual(schema.required, ['job_id', 'collection', 'document_id']);
    assert.equal(properties.collection.minLength, 1);
    assert.equal(properties.collection.maxLength, COLLECTION_MAX_CHARS);
    assert.equal(properties.document_id.minLength, 1);
    assert.equal(properties.document_id.maxLength, DOCUMENT_ID_MAX_CHARS);
    assert.equal(properties.job_id.pattern, JOB_ID_PATTERN.source);
    assert.deepEqual(properties.op.enum, [...JOB_OPS]);
    assert.equal(properties.op.default, 'upsert');
    assert.deepEqual(properties.metadata.type, ['object', 'null']);
    // Text is required unless op is delete: the schema's if/then/else.
    assert.deepEqual(schema.if.properties.op, { const: 'delete' });
    assert.deepEqual(schema.else, { required: ['text'] });
  });

  test('the published JobBody type has the schema properties, required and typed alike', () => {
    // Read the declaration the package ships (dist/job.d.ts) through the compiler's type checker.
    const file = join(PACKAGE_DIR, 'dist', 'job.d.ts');
    const program = ts.createProgram([file], { strict: true, noEmit: true, types: [] });
    const checker = program.getTypeChecker();
    const moduleSymbol = checker.getSymbolAtLocation(program.getSourceFile(file));
    const jobBody = checker.getExportsOfModule(moduleSymbol).find((s) => s.name === 'JobBody');
    assert.ok(jobBody, 'dist/job.d.ts exports JobBody');
    const type = checker.getDeclaredTypeOfSymbol(jobBody);
    const members = Object.fromEntries(
      checker.getPropertiesOfType(type).map((p) => {
        const declared = checker.getNonNullableType(checker.getTypeOfSymbol(p));
        const optional = (p.flags & ts.SymbolFlags.Optional) !== 0;
        return [p.name, { optional, type: declared, text: checker.typeToString(checker.getTypeOfSymbol(p)) }];
      }),
    );
    assert.deepEqual(Object.keys(members).sort(), Object.keys(schema.properties).sort());
    const required = Object.keys(members).filter((name) => !members[name].optional);
    assert.deepEqual(required.sort(), [...schema.required].sort());
    for (const name of ['job_id', 'collection', 'document_id', 'text']) {
      assert.equal(schema.properties[name].type, 'string');
      assert.ok(members[name].type.flags & ts.TypeFlags.String, `${name}: ${members[name].text}`);
    }
    const ops = members.op.type.isUnion() ? members.op.type.types.map((t) => t.value) : [members.op.type.value];
    assert.deepEqual(ops.sort(), [...schema.properties.op.enum].sort());
    assert.match(members.metadata.text, /JsonObject/);
    assert.match(members.metadata.text, /null/);
  });

  test('what validateJob enforces is what the schema says, at the edges', () => {
    const base = { job_id: newJobId(), collection: 'c', document_id: 'd', text: '' };
    for (const [field, max] of [
      ['collection', COLLECTION_MAX_CHARS],
      ['document_id', DOCUMENT_ID_MAX_CHARS],
    ]) {
      // Characters outside the Basic Multilingual Plane are two UTF-16 units but one character, as in Rust.
      validateJob({ ...base, [field]: '😀'.repeat(max) });
      assert.throws(() => validateJob({ ...base, [field]: '😀'.repeat(max + 1) }), { field });
      assert.throws(() => validateJob({ ...base, [field]: '' }), { field });
    }
    assert.equal(codePoints('a😀é漢'), 4);
  });

  test('strings the worker could not decode are refused: lone surrogates', () => {
    const base = { job_id: newJobId(), collection: 'c', document_id: 'd', text: 'x' };
    for (const field of ['collection', 'document_id', 'text']) {
      assert.throws(() => validateJob({ ...base, [field]: 'a\ud800b' }), { field });
    }
    assert.throws(() => validateJob({ ...base, metadata: { note: 'x\udfff' } }), { field: 'metadata' });
    // A backslash before "ud800" is text, not an escape.
    validateJob({ ...base, metadata: { path: '\\ud800', pair: '😀' } });
  });

  test('metadata must serialise to a JSON object', () => {
    const base = { job_id: newJobId(), collection: 'c', document_id: 'd', text: 'x' };
    const circular = {};
    circular.self = circular;
    assert.throws(() => validateJob({ ...base, metadata: circular }), { field: 'metadata' });
    assert.throws(() => validateJob({ ...base, metadata: new Date() }), { field: 'metadata' });
    assert.throws(() => validateJob({ ...base, metadata: { big: 1n } }), { field: 'metadata' });
    validateJob({ ...base, metadata: { when: new Date(), nested: [1, { a: null }] } });
  });
});

describe('the package agrees with the Rust crates', () => {
  test('contract version, header name and length limits', () => {
    const job = read('crates/quern-core/src/job.rs');
    const rustConst = (name) => Number(new RegExp(`const ${name}: \\w+ = (\\d+);`).exec(job)?.[1]);
    assert.equal(rustConst('CONTRACT_VERSION'), CONTRACT_VERSION);
    assert.equal(rustConst('COLLECTION_MAX_CHARS'), COLLECTION_MAX_CHARS);
    assert.equal(rustConst('DOCUMENT_ID_MAX_CHARS'), DOCUMENT_ID_MAX_CHARS);
    const headers = read('crates/quern-queue/src/headers.rs');
    assert.match(headers, /pub const CONTRACT: &str = "quern-contract";/);
    assert.match(read('crates/quern-core/src/trace.rs'), /TRACEPARENT_HEADER: &str = "traceparent";/);
  });

  test('queue arguments: the same keys and values as the Rust declaration', () => {
    const source = read('crates/quern-queue/src/topology.rs');
    const body = (fn) => new RegExp(`pub fn ${fn}\\([^)]*\\)[^{]*\\{([\\s\\S]*?)\\n\\}`).exec(source)[1];
    const keys = (text) => [...text.matchAll(/table\.insert\("([^"]+)"/g)].map((m) => m[1]).sort();
    const t = topology('t');
    assert.deepEqual(keys(body('ingest_queue_arguments')), Object.keys(ingestQueueArguments(t)).sort());
    assert.deepEqual(keys(body('dead_queue_arguments')), Object.keys(deadQueueArguments()).sort());
    assert.match(source, new RegExp(`QueueArguments \\{ delivery_limit: ${DELIVERY_LIMIT} \\}`));
    // The Rust side sends the limit as a signed 32-bit integer (LongInt), strings as long strings.
    assert.match(body('ingest_queue_arguments'), /"x-delivery-limit".into\(\), AMQPValue::LongInt\(/);
    assert.deepEqual(ingestQueueArguments(t)['x-delivery-limit'], { '!': 'int', value: 20 });
    assert.equal(ingestQueueArguments(t)['x-dead-letter-exchange'], 't.dead');
    for (const value of ['"quorum"', '"at-least-once"', '"reject-publish"']) {
      assert.match(body('ingest_queue_arguments'), new RegExp(`long_string\\(${value}\\)`));
    }
  });

  test('names derive from the prefix as in quern-core', () => {
    const t = topology('test-1.x_y');
    assert.equal(t.workExchange, 'test-1.x_y');
    assert.equal(t.ingestQueue, 'test-1.x_y.ingest');
    assert.equal(t.deadQueue, 'test-1.x_y.dead');
    assert.equal(t.deadExchange, 'test-1.x_y.dead');
    assert.equal(topology().prefix, 'quern');
    assert.throws(() => topology(''), TypeError);
    assert.throws(() => topology('a b'), TypeError);
    assert.throws(() => topology('x'.repeat(201)), TypeError);
  });
});

describe('job ids', () => {
  test('are UUIDv7 with the current time, valid for the contract', () => {
    const before = Date.now();
    const id = newJobId();
    assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    const at = jobIdTime(id);
    assert.ok(at >= before && at <= Date.now() + 2048, `${at} vs ${before}`);
    assert.match(id, JOB_ID_PATTERN);
    assert.equal(jobIdTime('0190a5c2-7a3e-4cc1-9f3b-2d1f0e6b8a11'), undefined, 'not a v7');
  });

  test('increase strictly, even many within one millisecond', () => {
    const ids = Array.from({ length: 20_000 }, () => newJobId());
    for (let i = 1; i < ids.length; i++) assert.ok(ids[i - 1] < ids[i], `${ids[i - 1]} !< ${ids[i]}`);
    assert.equal(new Set(ids).size, ids.length);
  });
});

describe('traceparent', () => {
  test('fresh ones are valid W3C roots, sampled', () => {
    const value = newTraceparent();
    assert.match(value, /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    assert.ok(isTraceparent(value));
    assert.notEqual(newTraceparent(), value);
  });

  test('invalid values are refused as the worker refuses them', () => {
    assert.ok(isTraceparent('00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'));
    for (const bad of [
      '',
      '01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
      '00-00000000000000000000000000000000-00f067aa0ba902b7-01',
      '00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01',
      '00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01',
      '00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01',
      '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra',
      '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7',
      undefined,
    ]) {
      assert.equal(isTraceparent(bad), false, String(bad));
    }
  });
});
