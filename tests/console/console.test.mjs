// `quern console` in a real browser (Debian's Chromium through playwright-core), against the real RabbitMQ and
// Postgres, a real quern-worker and the Rust fake embedder. Each test has its own queue prefix, database and
// processes (harness.mjs: World), all removed afterwards, failed or not. The pages are read only through the
// selectors of the console's page contract; a test that fails on a selector means the page broke the contract.
//
// Dead letters are made the way production makes them, by the worker: a body that breaks the job contract
// (reason `contract`), and a document the embedding provider refuses for good (the fake embedder's
// `--reject-marker`, a content policy: reason `embedding_rejected`).

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';

import {
  ADMIN_DATABASE_URL,
  CONSOLE_TOKEN,
  REJECT_MARKER,
  TEST_RETRY_TIERS,
  binary,
  consoleArgs,
  documentText,
  inWorld,
  integer,
  jobStatuses,
  launchBrowser,
  newJobId,
  readyCount,
  screenshot,
  startProcess,
  testPrefix,
  upsert,
  waitFor,
  waitForStatuses,
} from './harness.mjs';

/** A test that hangs fails after this long rather than holding up the run. */
const TEST_TIMEOUT_MS = 240_000;

let browser;

before(async () => {
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
});

// ---------------------------------------------------------------------------------------------------------------
// Page helpers (contract selectors only)

/** Clicks `selector` and waits for the navigation it starts; returns the main document's response. */
async function submit(page, selector) {
  const [response] = await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.click(selector)]);
  return response;
}

/** The integer shown by the first element matching `selector` (NaN if it does not show one). */
async function figure(page, selector) {
  return integer(await page.locator(selector).first().textContent({ timeout: 5_000 }));
}

/** The text of the first element matching `selector`, trimmed. */
async function text(page, selector) {
  return (await page.locator(selector).first().textContent({ timeout: 5_000 }))?.trim();
}

/** `data-id` of every row of the dead-letter table, sorted. */
async function deadLetterIds(page) {
  const ids = await page
    .locator('table#dead-letters tbody tr[data-id]')
    .evaluateAll((rows) => rows.map((row) => row.getAttribute('data-id')));
  return ids.sort();
}

/** `data-job-id` of every row of the job results, sorted. */
async function jobResultIds(page) {
  const ids = await page
    .locator('table#job-results tbody tr[data-job-id]')
    .evaluateAll((rows) => rows.map((row) => row.getAttribute('data-job-id')));
  return ids.sort();
}

/** Sum of `quern_embedding_request_duration_seconds_count` over every outcome, read from a worker's /metrics. */
/**
 * The worker's embedding request figures, read from its /metrics on our own (not the console's parser): requests of
 * every outcome, those answered 429, and the successful ones' count and summed seconds.
 */
async function embeddingFigures(metricsUrl) {
  const body = await (await fetch(metricsUrl)).text();
  const figures = { requests: 0, throttled: 0, ok: 0, okSeconds: 0 };
  for (const line of body.split('\n')) {
    const match = /^quern_embedding_request_duration_seconds_(count|sum)\{[^}]*outcome="([^"]+)"[^}]*\}\s+(\S+)/.exec(line);
    if (!match) continue;
    const [, kind, outcome, value] = match;
    if (kind === 'count') {
      figures.requests += Number(value);
      if (outcome === '429') figures.throttled += Number(value);
      if (outcome === 'ok') figures.ok += Number(value);
    } else if (outcome === 'ok') {
      figures.okSeconds += Number(value);
    }
  }
  return figures;
}

/**
 * From the dead-letter list: ticks `id`, presses Replay, and checks the confirmation page (a dry run) proposes
 * to replay it. Returns the confirmation page's response.
 */
async function confirmReplay(page, at, id) {
  const list = await page.goto(at('/dead-letters'));
  assert.equal(list.status(), 200);
  await page.locator(`form#selection input[type=checkbox][name=id][value="${id}"]`).check();
  const confirm = await submit(page, 'form#selection button[name=action][value=replay]');
  const why =
    confirm.status() === 200
      ? ''
      : `: ${await page
          .locator('#refused')
          .textContent()
          .catch(() => '?')}`;
  assert.equal(confirm.status(), 200, `the confirmation page${why}`);
  assert.equal(new URL(page.url()).pathname, '/dead-letters/confirm');
  assert.deepEqual(
    await page.locator('#confirm tr[data-id]').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-id'))),
    [id],
    'the confirmation lists exactly the ticked message',
  );
  assert.equal(await text(page, `#confirm tr[data-id="${id}"] td.outcome`), 'would_replay');
  assert.equal(await page.locator('form#act input[name=token][type=password]').count(), 1, 'a token field');
  return confirm;
}

// ---------------------------------------------------------------------------------------------------------------

describe('quern console in Chromium', () => {
  test(
    'overview: queues, job counts, throughput, embedding figures and dead reasons of known jobs',
    { timeout: TEST_TIMEOUT_MS },
    async () => {
      // The embedder throttles half the requests (429 with Retry-After: 1), which the worker retries without using up
      // attempts: the overview must count them.
      const options = { label: 'overview', rejectMarker: REJECT_MARKER, throttleRate: 0.5 };
      await inWorld(browser, options, async (w) => {
        const good = [0, 1, 2].map((i) => upsert('overview', `good-${i}`, documentText(i)));
        // Dies for good: the embedding provider's content policy refuses it (400).
        const refused = upsert('overview', 'refused', `${documentText(0)} ${REJECT_MARKER}`);
        // JSON with a job_id but no `text`: the contract refuses it, and the worker records the job dead.
        const noText = { job_id: newJobId(), collection: 'overview', document_id: 'no-text' };
        for (const job of [...good, refused]) await w.publish(job);
        await w.publishRaw(JSON.stringify(noText), noText.job_id);

        const expected = Object.fromEntries([
          ...good.map((j) => [j.job_id, 'succeeded']),
          [refused.job_id, 'dead'],
          [noText.job_id, 'dead'],
        ]);
        assert.deepEqual(await waitForStatuses(w.db, expected), expected, 'the worker settled every job');
        assert.ok(await w.waitForDead(2), 'both dead jobs are in the dead-letter queue');

        const ids = good.map((j) => j.job_id);
        const {
          rows: [db],
        } = await w.db.query(
          `SELECT coalesce(sum(chunk_count), 0)::int AS chunks,
                (SELECT count(*)::int FROM quern_chunks WHERE collection = 'overview') AS stored
         FROM quern_jobs WHERE job_id = ANY($1::uuid[]) AND status = 'succeeded'`,
          [ids],
        );
        assert.ok(db.chunks >= 3, `the documents made chunks: ${db.chunks}`);
        assert.equal(db.stored, db.chunks, 'quern_jobs.chunk_count agrees with the chunks stored');
        const { rows: deadErrors } = await w.db.query(
          `SELECT last_error FROM quern_jobs WHERE status = 'dead' AND job_id = ANY($1::uuid[])`,
          [[refused.job_id, noText.job_id]],
        );

        // Every job is settled, so the worker sends no more requests: its figures hold still while the page is read.
        const worker = await embeddingFigures(w.worker.metricsUrl);
        assert.ok(worker.ok > 0, 'the worker made embedding requests');
        // Half the requests are throttled, so on almost every run some were (all of them got through in the end:
        // every job settled above); the figures below are compared with the worker's own, whatever they are.
        const { page } = w;
        const response = await page.goto(w.at('/'));
        assert.equal(response.status(), 200);

        for (const href of ['/', '/jobs', '/dead-letters']) {
          assert.equal(await page.locator(`nav a[href="${href}"]`).count(), 1, `nav a[href="${href}"]`);
        }
        assert.equal(
          await page.locator('meta[http-equiv="refresh"]').getAttribute('content'),
          '60',
          'meta refresh carries --refresh in seconds',
        );

        // Queues, as the broker has them.
        const queue = (name, cell) => figure(page, `table#queues tbody tr[data-queue="${name}"] td.${cell}`);
        assert.equal(await queue(w.ingestQueue, 'ready'), 0, 'ingest ready');
        assert.equal(await queue(w.ingestQueue, 'consumers'), 1, 'ingest consumers: the one worker');
        assert.equal(await queue(w.deadQueue, 'ready'), 2, 'dead ready');
        for (const tier of TEST_RETRY_TIERS) {
          const row = page.locator(`table#queues tbody tr[data-queue="${w.prefix}.retry.${tier}"]`);
          assert.equal(await row.count(), 1, `a row for the ${tier} retry queue`);
        }

        // Jobs by status.
        const status = (s) => figure(page, `#jobs [data-status="${s}"] .count`);
        assert.equal(await status('succeeded'), 3, 'succeeded');
        assert.equal(await status('dead'), 2, 'dead');
        for (const s of ['queued', 'running', 'failed']) assert.equal(await status(s), 0, s);

        // Throughput.
        assert.ok((await page.locator('#throughput svg').count()) >= 1, '#throughput svg');
        assert.equal(await figure(page, '#throughput [data-figure="jobs-last-hour"]'), 3, 'jobs-last-hour');
        assert.equal(
          await figure(page, '#throughput [data-figure="chunks-last-hour"]'),
          db.chunks,
          'chunks-last-hour: the chunk_count of the succeeded jobs',
        );

        // Embedding, from the worker's /metrics.
        assert.equal(
          await figure(page, '#embedding [data-figure="embedding-requests"]'),
          worker.requests,
          'embedding-requests: every outcome, as the worker counts them',
        );
        assert.equal(await figure(page, '#embedding [data-figure="embedding-429"]'), worker.throttled, 'embedding-429');
        const meanText = await text(page, '#embedding [data-figure="embedding-mean-ms"]');
        assert.match(meanText, /^\d+(\.\d+)?(\s*ms)?$/, `embedding-mean-ms is a number of milliseconds: "${meanText}"`);
        const expectedMeanMs = (worker.okSeconds / worker.ok) * 1000;
        assert.ok(
          Math.abs(Number.parseFloat(meanText) - expectedMeanMs) <= 1,
          `embedding-mean-ms ${meanText}: the worker's successful requests took ${expectedMeanMs.toFixed(2)} ms on average`,
        );
        assert.equal(await page.locator('#embedding [data-worker]').count(), 1, 'one [data-worker] per metrics URL');
        assert.equal(await text(page, '#embedding [data-worker] .up'), 'up', 'the worker is shown up');

        // Why the dead jobs died: every reason listed with a count, both jobs counted, each last_error shown.
        const reasons = await page
          .locator('#dead-reasons li[data-reason]')
          .evaluateAll((items) =>
            items.map((li) => ({ text: li.textContent, count: li.querySelector('.count')?.textContent })),
          );
        assert.ok(reasons.length >= 1, 'the dead reasons list is not empty');
        assert.equal(
          reasons.reduce((sum, r) => sum + integer(r.count), 0),
          2,
          `the reasons count both dead jobs: ${JSON.stringify(reasons)}`,
        );
        for (const { last_error: error } of deadErrors) {
          assert.ok(
            reasons.some((r) => r.text.includes(error.slice(0, 40))),
            `the reason "${error}" is shown: ${JSON.stringify(reasons)}`,
          );
        }
        assert.equal(await page.locator('#index').count(), 1, '#index');

        await screenshot(page, 'overview');
      });
    },
  );

  test(
    'the overview refreshes itself (meta refresh) and shows jobs finished since',
    { timeout: TEST_TIMEOUT_MS },
    async () => {
      await inWorld(browser, { label: 'refresh', refresh: '1s' }, async (w) => {
        const first = upsert('refresh', 'first', documentText(0));
        await w.publish(first);
        await waitForStatuses(w.db, { [first.job_id]: 'succeeded' });

        const { page } = w;
        let loads = 0;
        page.on('load', () => loads++);
        await page.goto(w.at('/'));
        assert.equal(await page.locator('meta[http-equiv="refresh"]').getAttribute('content'), '1');
        assert.equal(await figure(page, '#jobs [data-status="succeeded"] .count'), 1);

        const second = upsert('refresh', 'second', documentText(1));
        await w.publish(second);
        await waitForStatuses(w.db, { [second.job_id]: 'succeeded' });
        // No reload from here: the page must reload itself and show the second job.
        const shown = await waitFor(
          () => figure(page, '#jobs [data-status="succeeded"] .count').then((n) => n === 2),
          15_000,
        );
        assert.ok(shown, 'the succeeded count reached 2 without a reload by the test');
        assert.ok(loads >= 2, `the page reloaded itself (${loads} loads)`);
      });
    },
  );

  test(
    'jobs: search by collection, job id and document id; a job page shows its record',
    { timeout: TEST_TIMEOUT_MS },
    async () => {
      await inWorld(browser, { label: 'jobs', rejectMarker: REJECT_MARKER }, async (w) => {
        const good = [0, 1, 2].map((i) => upsert('jobs-a', `good-${i}`, documentText(i)));
        const refused = [0, 1].map((i) => upsert('jobs-a', `refused-${i}`, `${documentText(i)} ${REJECT_MARKER}`));
        const elsewhere = upsert('jobs-b', 'other', documentText(1));
        // The contract refuses a body without `text`; the worker records the job dead but without its collection
        // (it does not trust a body that broke the contract), so it is found by job id, not by collection.
        const noText = { job_id: newJobId(), collection: 'jobs-a', document_id: 'no-text' };
        for (const job of [...good, ...refused, elsewhere]) await w.publish(job);
        await w.publishRaw(JSON.stringify(noText), noText.job_id);
        const expected = Object.fromEntries([
          ...[...good, elsewhere].map((j) => [j.job_id, 'succeeded']),
          ...[...refused, noText].map((j) => [j.job_id, 'dead']),
        ]);
        assert.deepEqual(await waitForStatuses(w.db, expected), expected, 'the worker settled every job');

        const { page } = w;
        assert.equal((await page.goto(w.at('/jobs'))).status(), 200);
        await page.locator('form#job-search input[name=collection]').fill('jobs-a');
        const searched = await submit(page, 'form#job-search [type=submit], form#job-search button');
        assert.equal(searched.status(), 200);
        assert.equal(new URL(page.url()).searchParams.get('collection'), 'jobs-a', 'the search form is a GET');
        const inA = [...good, ...refused].map((j) => j.job_id).sort();
        assert.deepEqual(await jobResultIds(page), inA, 'the 3 succeeded and 2 dead jobs of the collection');
        for (const job of [...good, ...refused]) {
          const row = `table#job-results tbody tr[data-job-id="${job.job_id}"]`;
          assert.equal(await text(page, `${row} td.status`), expected[job.job_id], `status of ${job.document_id}`);
          assert.equal(await text(page, `${row} td.collection`), 'jobs-a');
          assert.equal(await text(page, `${row} td.document`), job.document_id);
          assert.equal(await page.locator(`${row} a[href="/jobs/${job.job_id}"]`).count(), 1, 'a link to the job');
        }
        const deadRow = `table#job-results tbody tr[data-job-id="${refused[0].job_id}"]`;
        assert.match(await text(page, `${deadRow} td.error`), /\S/, 'a dead job shows its error');
        await screenshot(page, 'jobs');

        // By job id: the contract-refused job, recorded without a collection.
        assert.equal((await page.goto(w.at(`/jobs?job_id=${noText.job_id}`))).status(), 200);
        assert.deepEqual(await jobResultIds(page), [noText.job_id]);
        assert.equal(await text(page, `table#job-results tbody tr[data-job-id="${noText.job_id}"] td.status`), 'dead');
        // By collection and document id.
        assert.equal((await page.goto(w.at('/jobs?collection=jobs-b&document_id=other'))).status(), 200);
        assert.deepEqual(await jobResultIds(page), [elsewhere.job_id]);

        // One succeeded job's page, opened from the results.
        const {
          rows: [record],
        } = await w.db.query(`SELECT chunk_count, attempts FROM quern_jobs WHERE job_id = $1`, [good[2].job_id]);
        await page.goto(w.at('/jobs?collection=jobs-a'));
        const opened = await submit(
          page,
          `table#job-results tbody tr[data-job-id="${good[2].job_id}"] a[href="/jobs/${good[2].job_id}"]`,
        );
        assert.equal(opened.status(), 200);
        assert.equal(new URL(page.url()).pathname, `/jobs/${good[2].job_id}`);
        const field = (name) => text(page, `dl#job dd[data-field="${name}"]`);
        assert.equal(await field('status'), 'succeeded');
        assert.equal(await field('collection'), 'jobs-a');
        assert.equal(await field('document'), 'good-2');
        assert.equal(await field('op'), 'upsert');
        assert.equal(integer(await field('chunks')), record.chunk_count, 'chunks: quern_jobs.chunk_count');
        assert.equal(integer(await field('attempts')), record.attempts, 'attempts');
        for (const name of ['error', 'created', 'updated', 'took']) {
          assert.equal(await page.locator(`dl#job dd[data-field="${name}"]`).count(), 1, `dd[data-field=${name}]`);
        }
        await screenshot(page, 'job');

        // A dead job's page shows why.
        const {
          rows: [dead],
        } = await w.db.query(`SELECT last_error FROM quern_jobs WHERE job_id = $1`, [refused[0].job_id]);
        assert.equal((await page.goto(w.at(`/jobs/${refused[0].job_id}`))).status(), 200);
        assert.equal(await field('status'), 'dead');
        assert.ok((await field('error')).includes(dead.last_error.slice(0, 40)), 'the job page shows last_error');
      });
    },
  );

  test(
    'dead letters: filters by reason, collection, id and age; a letter page shows its body as text',
    { timeout: TEST_TIMEOUT_MS },
    async () => {
      await inWorld(browser, { label: 'dead', rejectMarker: REJECT_MARKER }, async (w) => {
        // Not JSON at all, and full of markup: a console that rendered it as HTML would run the script.
        const garbageId = `garbage-${randomBytes(4).toString('hex')}`;
        const garbage =
          'not JSON: <b>bold</b> <script>window.__quernPwned = true</script> <img src=x onerror="window.__quernPwned = true"> & "quotes"';
        // JSON without `text`: the contract refuses it; its collection is read from the body.
        const noText = { job_id: newJobId(), collection: 'dl-alpha', document_id: 'no-text', note: '<b>bold</b>' };
        // Refused by the embedding provider for good.
        const refused = [0, 1].map((i) => upsert('dl-beta', `refused-${i}`, `${documentText(i)} ${REJECT_MARKER}`));
        const fine = upsert('dl-beta', 'fine', documentText(2));
        await w.publishRaw(garbage, garbageId);
        await w.publishRaw(JSON.stringify(noText), noText.job_id);
        for (const job of [...refused, fine]) await w.publish(job);
        await waitForStatuses(w.db, {
          [fine.job_id]: 'succeeded',
          [refused[0].job_id]: 'dead',
          [refused[1].job_id]: 'dead',
        });
        assert.ok(await w.waitForDead(4), 'four dead letters');

        const contract = [garbageId, noText.job_id].sort();
        const rejected = refused.map((j) => j.job_id).sort();
        const all = [...contract, ...rejected].sort();
        const { page } = w;
        assert.equal((await page.goto(w.at('/dead-letters'))).status(), 200);
        assert.deepEqual(await deadLetterIds(page), all, 'every dead letter, and only those');
        assert.match(await text(page, '#dead-count'), /\b4 of 4 dead letters\b/);
        for (const id of contract) {
          assert.equal(await text(page, `table#dead-letters tr[data-id="${id}"] td.reason`), 'contract');
        }
        for (const job of refused) {
          const row = `table#dead-letters tr[data-id="${job.job_id}"]`;
          assert.equal(await text(page, `${row} td.reason`), 'embedding_rejected');
          assert.equal(await text(page, `${row} td.collection`), 'dl-beta');
          assert.equal(await text(page, `${row} td.document`), job.document_id);
          assert.match(await text(page, `${row} td.error`), /\S/);
          assert.equal(integer(await text(page, `${row} td.attempts`)), 1);
        }
        assert.equal(await text(page, `table#dead-letters tr[data-id="${noText.job_id}"] td.collection`), 'dl-alpha');
        await screenshot(page, 'dead-letters');

        // The filter form (a GET): by reason.
        await page.locator('form#filters input[name=reason]').fill('contract');
        const filtered = await submit(page, 'form#filters [type=submit], form#filters button');
        assert.equal(filtered.status(), 200);
        assert.equal(new URL(page.url()).searchParams.get('reason'), 'contract');
        assert.deepEqual(await deadLetterIds(page), contract, 'reason=contract');
        assert.match(await text(page, '#dead-count'), /\b2 of 4 dead letters\b/);
        await screenshot(page, 'dead-letters-filtered');

        const only = async (query, expected, what) => {
          assert.equal((await page.goto(w.at(`/dead-letters?${query}`))).status(), 200, query);
          assert.deepEqual(await deadLetterIds(page), expected, what);
        };
        await only('reason=embedding_rejected', rejected, 'reason=embedding_rejected');
        await only('collection=dl-beta', rejected, 'collection=dl-beta');
        await only('collection=dl-alpha', [noText.job_id], 'collection=dl-alpha');
        await only('reason=contract&collection=dl-beta', [], 'two filters at once: none matches both');
        await only(`id=${refused[1].job_id}`, [refused[1].job_id], 'by id');
        await only('older_than=1h', [], 'none died over an hour ago');
        await only('newer_than=1h', all, 'all died within the hour');

        // The garbage letter's page: the body verbatim, as text.
        await page.goto(w.at('/dead-letters'));
        const shown = await submit(page, `table#dead-letters tr[data-id="${garbageId}"] a.show`);
        assert.equal(shown.status(), 200);
        assert.equal(new URL(page.url()).pathname, `/dead-letters/${garbageId}`);
        assert.equal((await page.locator('pre#body').textContent()).trim(), garbage, 'pre#body is the body, verbatim');
        assert.equal(await page.locator('pre#body b').count(), 0, 'no <b> element: the body is not HTML');
        assert.equal(await page.locator('pre#body script, pre#body img').count(), 0, 'no script or img element');
        assert.equal(await page.evaluate(() => window.__quernPwned), undefined, 'nothing in the body ran');
        const header = (name) => text(page, `table#headers tr[data-header="${name}"] td.value`);
        assert.equal(await header('quern-reason'), 'contract');
        assert.equal(await header('quern-reason-class'), 'permanent');
        await screenshot(page, 'dead-letter');

        // The JSON letter's page keeps its markup as text too.
        assert.equal((await page.goto(w.at(`/dead-letters/${noText.job_id}`))).status(), 200);
        assert.ok((await page.locator('pre#body').textContent()).includes('<b>bold</b>'));
        assert.equal(await page.locator('pre#body b').count(), 0);
      });
    },
  );

  test(
    'replay with a missing or wrong token is refused (403) and the message stays dead',
    { timeout: TEST_TIMEOUT_MS },
    async () => {
      await inWorld(browser, { label: 'refused', rejectMarker: REJECT_MARKER }, async (w) => {
        const job = upsert('refused', 'doc', `${documentText(1)} ${REJECT_MARKER}`);
        await w.publish(job);
        await waitForStatuses(w.db, { [job.job_id]: 'dead' });
        assert.ok(await w.waitForDead(1));
        // With the worker gone, a replay that went through would sit in the ingest queue for all to see (a
        // running worker would dead-letter it again, hiding it).
        await w.worker.stop();

        const { page } = w;
        for (const token of ['', 'not-the-token']) {
          await confirmReplay(page, (p) => w.at(p), job.job_id);
          await page.locator('form#act input[name=token]').fill(token);
          // The server must refuse an empty token even if the browser's own validation (a `required` field) is
          // out of the way, as it is for any client other than this page.
          await page.locator('form#act').evaluate((form) => {
            form.noValidate = true;
          });
          const refused = await submit(page, 'form#act button#do-it');
          assert.equal(refused.status(), 403, `token ${JSON.stringify(token)} is refused`);
          assert.equal(await page.locator('#refused').count(), 1, '#refused explains');
          assert.match(await text(page, '#refused'), /\S/);
          if (token) await screenshot(page, 'refused');
          assert.equal(await readyCount(w.deadQueue), 1, 'the message is still in the dead-letter queue');
          assert.equal(await readyCount(w.ingestQueue), 0, 'nothing was replayed');
        }
        assert.deepEqual(await jobStatuses(w.db, [job.job_id]), { [job.job_id]: 'dead' });
        await page.goto(w.at('/dead-letters'));
        assert.deepEqual(await deadLetterIds(page), [job.job_id], 'the console still lists it');
      });
    },
  );

  test(
    'replay with the token: the job succeeds once the provider takes the document',
    { timeout: TEST_TIMEOUT_MS },
    async () => {
      // The honest way to a dead letter that can succeed on replay: the worker dead-letters a document the
      // embedding provider refuses for good (a content policy, the fake embedder's --reject-marker); then the
      // provider changes its mind (the fake embedder restarted on the same port without the policy), as after a
      // provider-side fix, and an operator replays the letter from the console. The worker runs throughout.
      await inWorld(browser, { label: 'replay', rejectMarker: REJECT_MARKER }, async (w) => {
        const job = upsert('replay', 'doc', `${documentText(2)} ${REJECT_MARKER}`);
        await w.publish(job);
        await waitForStatuses(w.db, { [job.job_id]: 'dead' });
        assert.ok(await w.waitForDead(1));
        await w.replaceEmbedder({});

        const { page } = w;
        await confirmReplay(page, (p) => w.at(p), job.job_id);
        assert.equal(await readyCount(w.deadQueue), 1, 'the confirmation is a dry run');
        assert.match(await text(page, '#confirm'), /\S/);
        await screenshot(page, 'confirm');
        await page.locator('form#act input[name=token]').fill(CONSOLE_TOKEN);
        const result = await submit(page, 'form#act button#do-it');
        assert.equal(result.status(), 200, 'the replay is done');
        assert.equal(new URL(page.url()).pathname, '/dead-letters/replay');
        assert.equal(await figure(page, '#result [data-figure="done"]'), 1, 'one replayed');
        assert.equal(await figure(page, '#result [data-figure="refused"]'), 0, 'none refused');
        assert.equal(await figure(page, '#result [data-figure="failed"]'), 0, 'none failed');
        await screenshot(page, 'replayed');

        const statuses = await waitForStatuses(w.db, { [job.job_id]: 'succeeded' }, 60_000);
        assert.equal(statuses[job.job_id], 'succeeded', 'the replayed job succeeded');
        const {
          rows: [stored],
        } = await w.db.query(
          `SELECT (SELECT count(*)::int FROM quern_chunks WHERE collection = 'replay' AND document_id = 'doc') AS chunks,
                (SELECT chunk_count FROM quern_jobs WHERE job_id = $1) AS recorded`,
          [job.job_id],
        );
        assert.ok(stored.chunks > 0, 'its chunks are stored');
        assert.equal(stored.chunks, stored.recorded);
        assert.equal(await readyCount(w.deadQueue), 0, 'the dead-letter queue is empty');
        await page.goto(w.at('/dead-letters'));
        assert.deepEqual(await deadLetterIds(page), []);
        await page.goto(w.at(`/jobs/${job.job_id}`));
        assert.equal(await text(page, 'dl#job dd[data-field="status"]'), 'succeeded');
      });
    },
  );

  test(
    'cross-site and CSRF-less POSTs are refused (403) and change nothing',
    { timeout: TEST_TIMEOUT_MS },
    async () => {
      await inWorld(browser, { label: 'csrf', rejectMarker: REJECT_MARKER }, async (w) => {
        const job = upsert('csrf', 'doc', `${documentText(0)} ${REJECT_MARKER}`);
        await w.publish(job);
        await waitForStatuses(w.db, { [job.job_id]: 'dead' });
        assert.ok(await w.waitForDead(1));
        await w.worker.stop(); // a replay that went through would then wait in the ingest queue
        const id = job.job_id;

        const { page, context } = w;
        assert.equal((await page.goto(w.at('/dead-letters'))).status(), 200);
        const cookie = (await context.cookies(w.url)).find((c) => c.name === 'quern_csrf');
        assert.ok(cookie, 'a GET page sets the quern_csrf cookie');
        assert.equal(cookie.sameSite, 'Strict', 'quern_csrf is SameSite=Strict');
        const csrf = await page.locator('form#selection input[type=hidden][name=csrf]').getAttribute('value');
        assert.ok(csrf, 'form#selection carries a hidden csrf input');

        /**
         * A form POST made in the console's own page (same origin: the browser sends its cookie and Origin), as a
         * script injected into the page would make it; its status and what the answer shows. (Not fetch(): the
         * console's Content-Security-Policy rightly gives pages no connect-src.)
         */
        const post = async (path, fields) => {
          await page.goto(w.at('/dead-letters'));
          const [response] = await Promise.all([
            page.waitForNavigation({ waitUntil: 'load' }),
            page.evaluate(
              ({ path: p, fields: f }) => {
                const form = document.createElement('form');
                form.method = 'post';
                form.action = p;
                for (const [name, value] of Object.entries(f)) {
                  const input = document.createElement('input');
                  Object.assign(input, { type: 'hidden', name, value });
                  form.append(input);
                }
                document.body.append(form);
                form.submit();
              },
              { path, fields },
            ),
          ]);
          return {
            status: response.status(),
            refused: (await page.locator('#refused').count()) === 1,
            confirm: (await page.locator('#confirm').count()) === 1,
          };
        };

        // The control: the same request with the csrf field is accepted (the confirmation is a dry run).
        const accepted = await post('/dead-letters/confirm', { action: 'replay', id, csrf });
        assert.deepEqual(accepted, { status: 200, refused: false, confirm: true }, 'with csrf: the confirmation');
        // Without the csrf field, or with a wrong one: refused, even with the right token.
        assert.deepEqual(
          await post('/dead-letters/confirm', { action: 'replay', id }),
          { status: 403, refused: true, confirm: false },
          'confirm without csrf',
        );
        assert.deepEqual(
          await post('/dead-letters/replay', { id, token: CONSOLE_TOKEN }),
          { status: 403, refused: true, confirm: false },
          'replay with the token but without csrf',
        );
        assert.deepEqual(
          await post('/dead-letters/replay', { id, token: CONSOLE_TOKEN, csrf: `${csrf}x` }),
          { status: 403, refused: true, confirm: false },
          'replay with a wrong csrf',
        );
        assert.equal(await readyCount(w.deadQueue), 1);

        // Another site's Origin, with the real cookie, csrf and token (an API client sending what a browser would).
        const foreign = await context.request.post(w.at('/dead-letters/replay'), {
          form: { id, token: CONSOLE_TOKEN, csrf },
          headers: { Origin: 'http://evil.example' },
          failOnStatusCode: false,
        });
        assert.equal(foreign.status(), 403, 'a POST with a foreign Origin');
        assert.match(await foreign.text(), /id=["']?refused/);

        // A real cross-site form post: a page on another site (127.0.0.2 is a different site from 127.0.0.1)
        // submits the replay form to the console, even knowing the token and a csrf value. The browser sends
        // its own Origin and withholds the SameSite=Strict cookie.
        const evil = http.createServer((request, response) => {
          response.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
          response.end(`<!doctype html><title>evil</title>
          <form id=attack method=post action="${w.at('/dead-letters/replay')}">
            <input name=id value="${id}"><input name=token value="${CONSOLE_TOKEN}"><input name=csrf value="${csrf}">
            <button id=go>win a prize</button>
          </form>`);
        });
        await new Promise((resolve_) => evil.listen(0, '127.0.0.2', resolve_));
        try {
          const attacker = `http://127.0.0.2:${evil.address().port}/`;
          assert.equal((await page.goto(attacker)).status(), 200);
          const crossSite = await submit(page, '#go');
          assert.equal(new URL(page.url()).origin, new URL(w.url).origin, 'the form went to the console');
          assert.equal(crossSite.status(), 403, 'the cross-site form post is refused');
          assert.equal(await page.locator('#refused').count(), 1);
          await screenshot(page, 'cross-site');
        } finally {
          await new Promise((resolve_) => evil.close(resolve_));
        }

        assert.equal(await readyCount(w.deadQueue), 1, 'the message is still in the dead-letter queue');
        assert.equal(await readyCount(w.ingestQueue), 0, 'nothing was replayed');
        assert.deepEqual(await jobStatuses(w.db, [id]), { [id]: 'dead' });
      });
    },
  );

  test(
    'on a non-loopback address the console will not start without QUERN_CONSOLE_TOKEN',
    { timeout: TEST_TIMEOUT_MS },
    async () => {
      const args = consoleArgs({
        listen: '0.0.0.0:0',
        prefix: testPrefix('exposed'),
        databaseUrl: ADMIN_DATABASE_URL,
        metricsUrls: ['http://127.0.0.1:9/metrics'],
      });
      const console_ = startProcess('console', binary('quern'), args, { QUERN_CONSOLE_TOKEN: undefined });
      const status = await Promise.race([console_.exited, sleep(30_000).then(() => null)]);
      await console_.stop();
      assert.ok(status, `it did not exit:\n${console_.output()}`);
      assert.equal(status.code, 2, `exit code 2:\n${console_.output()}`);
      assert.match(console_.output(), /QUERN_CONSOLE_TOKEN/, 'the message names QUERN_CONSOLE_TOKEN');
      assert.doesNotMatch(console_.stdout(), /listening on/);
    },
  );
});
