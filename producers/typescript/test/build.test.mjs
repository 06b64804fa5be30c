// The package as an installing user gets it: the committed dist/ is exactly what the compiler makes of src/,
// the published declarations type-check an application's code, and `npm install` of the folder works on a
// machine with nothing built, with amqplib its only runtime dependency.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { promisify } from 'node:util';

import { PACKAGE_DIR } from './harness.mjs';

const run = promisify(execFile);
const TSC = join(PACKAGE_DIR, 'node_modules', 'typescript', 'bin', 'tsc');
const NPM_FLAGS = ['--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error'];
const scratch = mkdtempSync(join(tmpdir(), 'quern-ts-build-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

const pkg = JSON.parse(readFileSync(join(PACKAGE_DIR, 'package.json'), 'utf8'));

/** Runs a script in a fresh directory's Node and returns its stdout. */
async function nodeIn(dir, script) {
  const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script], { cwd: dir });
  return stdout;
}

// Imports the package by name from an application directory and uses it without a broker.
const SMOKE = `
  import { validateJob, newJobId, Producer } from '@quern/producer';
  const body = validateJob({ job_id: newJobId(), collection: 'c', document_id: 'd', text: 'x' });
  await Producer.connect('amqp://guest:guest@127.0.0.1:1/%2f').then(
    () => { throw new Error('connected to a closed port'); },
    (error) => console.log(error.name, error.code, typeof body.job_id),
  );
`;

describe('the committed build', () => {
  test('dist/ is what tsc makes of src/ (run `npm run build` and commit dist/ if this fails)', async () => {
    const out = join(scratch, 'dist');
    await run(process.execPath, [TSC, '-p', join(PACKAGE_DIR, 'tsconfig.json'), '--outDir', out]);
    const committed = join(PACKAGE_DIR, 'dist');
    assert.deepEqual(readdirSync(committed).sort(), readdirSync(out).sort(), 'same files');
    for (const file of readdirSync(out)) {
      assert.equal(
        readFileSync(join(committed, file), 'utf8'),
        readFileSync(join(out, file), 'utf8'),
        `dist/${file} is stale`,
      );
    }
  });

  test('the published types check an application written against them', async () => {
    await run(process.execPath, [TSC, '-p', join(PACKAGE_DIR, 'test', 'types', 'tsconfig.json')]).catch((error) => {
      assert.fail(`tsc --noEmit failed:\n${error.stdout}${error.stderr}`);
    });
  });

  test('amqplib is the only runtime dependency; Node 20 is enough', () => {
    assert.deepEqual(Object.keys(pkg.dependencies), ['amqplib']);
    assert.equal(pkg.engines.node, '>=20');
    assert.equal(pkg.type, 'module');
    assert.equal(pkg.scripts.prepare, undefined, 'installing must not need a build (or typescript)');
    assert.equal(pkg.scripts.install, undefined);
  });

  test('the packed files hold the build and no tests', async () => {
    const { stdout } = await run('npm', ['pack', '--dry-run', '--json', ...NPM_FLAGS], { cwd: PACKAGE_DIR });
    const files = JSON.parse(stdout)[0].files.map((f) => f.path);
    for (const needed of ['package.json', 'README.md', 'dist/index.js', 'dist/index.d.ts', 'dist/producer.js']) {
      assert.ok(files.includes(needed), `${needed} in ${files}`);
    }
    assert.ok(!files.some((f) => f.startsWith('test/') || f.startsWith('node_modules/')), `${files}`);
  });
});

describe('npm install of the folder on a machine with nothing built', () => {
  test('`npm install ./producers/typescript` from a project around it', async () => {
    // A copy without node_modules, as a fresh clone has it.
    const root = join(scratch, 'root');
    cpSync(PACKAGE_DIR, join(root, 'producers', 'typescript'), {
      recursive: true,
      filter: (src) => !src.includes('node_modules'),
    });
    writeFileSync(join(root, 'package.json'), JSON.stringify({ name: 'app', private: true }));
    await run('npm', ['install', './producers/typescript', ...NPM_FLAGS], { cwd: root });
    assert.match(await nodeIn(root, SMOKE), /^BrokerError CONNECT string/);
  });

  test('`npm install --install-links <folder>` from an application elsewhere', async () => {
    const app = join(scratch, 'app');
    mkdirSync(app);
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', private: true }));
    await run('npm', ['install', '--install-links', PACKAGE_DIR, ...NPM_FLAGS], { cwd: app });
    const installed = readdirSync(join(app, 'node_modules')).filter((name) => !name.startsWith('.'));
    assert.deepEqual(installed.sort(), ['@quern', 'amqplib'], 'the package and amqplib, nothing else');
    assert.match(await nodeIn(app, SMOKE), /^BrokerError CONNECT string/);
  });
});
