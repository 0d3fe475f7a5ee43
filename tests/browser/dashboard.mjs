#!/usr/bin/env node
// Drives the hongbao operations dashboard in Debian's Chromium through playwright-core and prints,
// as one line of JSON on stdout, every figure the page shows (read from the DOM).
//
//   node dashboard.mjs URL USER PASSWORD [--screenshot PATH]
//
// playwright-core is found, in order: in $HONGBAO_BROWSER_DEPS/node_modules (a directory where
// `npm ci --prefix DIR` was run with this folder's package files), through NODE_PATH or a
// node_modules beside this script, in ./node_modules of the working directory.
// The browser is $CHROMIUM or /usr/bin/chromium; Playwright's own browser download is never used.
// Exits 0 after printing the JSON; 1 with a message on stderr on any failure (HTTP error on the page,
// page error, console error, timeout); 2 on bad arguments.

import { createRequire } from 'node:module';
import path from 'node:path';
import fs from 'node:fs';

const READY_TIMEOUT_MS = 60_000;   // until the page has rendered at least 2 samples
const FRESH_TIMEOUT_MS = 15_000;   // for one more update after that
const NAV_TIMEOUT_MS = 30_000;

function usage(msg) {
  if (msg) process.stderr.write(`dashboard.mjs: ${msg}\n`);
  process.stderr.write('usage: node dashboard.mjs URL USER PASSWORD [--screenshot PATH]\n');
  process.exit(2);
}

function parseArgs(argv) {
  const pos = [];
  let screenshot = null;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--screenshot') {
      if (i + 1 >= argv.length) usage('--screenshot needs a PATH');
      screenshot = argv[++i];
    } else if (a.startsWith('--screenshot=')) {
      screenshot = a.slice('--screenshot='.length);
    } else if (a === '-h' || a === '--help') {
      usage();
    } else if (a.startsWith('--')) {
      usage(`unknown option ${a}`);
    } else {
      pos.push(a);
    }
  }
  if (pos.length !== 3) usage('expected URL USER PASSWORD');
  const [url, username, password] = pos;
  try {
    new URL(url);
  } catch {
    usage(`not a URL: ${url}`);
  }
  if (screenshot === '') usage('--screenshot needs a PATH');
  return { url, username, password, screenshot: screenshot ? path.resolve(screenshot) : null };
}

async function loadPlaywright() {
  const tried = [];
  const deps = process.env.HONGBAO_BROWSER_DEPS;
  if (deps) {
    try {
      return createRequire(path.join(path.resolve(deps), 'package.json'))('playwright-core');
    } catch (e) {
      throw new Error(`HONGBAO_BROWSER_DEPS=${deps} but playwright-core is not installed there ` +
        `(run: npm ci --prefix ${deps} with tests/browser/package.json and package-lock.json copied in): ${e.message.split('\n')[0]}`);
    }
  }
  // CommonJS resolution honours NODE_PATH and node_modules folders above this script.
  try {
    return createRequire(import.meta.url)('playwright-core');
  } catch (e) {
    tried.push(e.message.split('\n')[0]);
  }
  try {
    return createRequire(path.join(process.cwd(), 'package.json'))('playwright-core');
  } catch (e) {
    tried.push(e.message.split('\n')[0]);
  }
  try {
    const m = await import('playwright-core');
    return m.default ?? m;
  } catch (e) {
    tried.push(e.message.split('\n')[0]);
  }
  throw new Error('cannot find playwright-core: set HONGBAO_BROWSER_DEPS to a directory where ' +
    '`npm ci --prefix DIR` installed tests/browser/package.json, or set NODE_PATH to its node_modules ' +
    `(${tried.join('; ')})`);
}

// Everything the page shows, read in one synchronous pass so the figures are of one render.
function readFigures() {
  const problems = [];
  const byId = (id) => {
    const el = document.getElementById(id);
    if (!el) problems.push(`#${id} is missing`);
    return el;
  };
  const raw = (el, what) => {
    if (!el) return null;
    const v = el.dataset.value;
    if (v === undefined) { problems.push(`${what} has no data-value`); return null; }
    if (v === '') return null;
    const n = Number(v);
    if (!Number.isFinite(n)) { problems.push(`${what} data-value ${JSON.stringify(v)} is not a number`); return null; }
    return n;
  };
  // a total: the text shown must be the plain integer and agree with data-value
  const total = (id) => {
    const el = byId(id);
    if (!el) return null;
    const text = el.textContent.trim();
    const n = raw(el, `#${id}`);
    if (!/^-?\d+$/.test(text)) { problems.push(`#${id} shows ${JSON.stringify(text)}, not a plain integer`); return n; }
    if (n !== null && Number(text) !== n) problems.push(`#${id} shows ${text} but data-value is ${n}`);
    return Number(text);
  };
  const out = {
    grants_total: total('grants-total'),
    replayed_total: total('replayed-total'),
    refused_total: total('refused-total'),
    credits_total: total('credits-total'),
    backlog: total('backlog'),
    writer_reason: (byId('writer-reason')?.textContent ?? '').trim(),
    writer_limit: raw(byId('writer-limit'), '#writer-limit'),
    plugin_failures_total: total('plugin-failures-total'),
    scenes: {},
    refusals: {},
    updated_at: Number(document.body.dataset.updatedAt),
    samples: Number(document.body.dataset.samples),
  };
  const limitText = (byId('writer-limit')?.textContent ?? '').trim();
  if (out.writer_limit === null && limitText !== 'unlimited') {
    problems.push(`#writer-limit has no value but shows ${JSON.stringify(limitText)}, not "unlimited"`);
  }
  for (const tr of document.querySelectorAll('tr[data-scene]')) {
    const cell = (field) => {
      const td = tr.querySelector(`[data-field="${field}"]`);
      if (!td) { problems.push(`scene ${tr.dataset.scene} has no ${field} cell`); return null; }
      return raw(td, `scene ${tr.dataset.scene} ${field}`);
    };
    if (Object.prototype.hasOwnProperty.call(out.scenes, tr.dataset.scene)) {
      problems.push(`scene ${tr.dataset.scene} appears twice`);
    }
    out.scenes[tr.dataset.scene] = { stock_left: cell('stock_left'), budget_left_cents: cell('budget_left_cents') };
  }
  for (const tr of document.querySelectorAll('tr[data-refusal]')) {
    const td = tr.querySelector('[data-field="count"]');
    if (!td) { problems.push(`refusal ${tr.dataset.refusal} has no count cell`); continue; }
    out.refusals[tr.dataset.refusal] = raw(td, `refusal ${tr.dataset.refusal} count`);
  }
  return { out, problems };
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const { chromium } = await loadPlaywright();
  const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
  if (!fs.existsSync(executablePath)) {
    throw new Error(`no browser at ${executablePath} (apt-get install chromium, or set CHROMIUM)`);
  }

  // The first failure the page reports (page error, console error, crash) ends the run.
  let failed = null;
  let rejectFailure;
  const failure = new Promise((_, reject) => { rejectFailure = reject; });
  failure.catch(() => {});
  const fail = (msg) => {
    if (!failed) {
      failed = new Error(msg);
      rejectFailure(failed);
    }
  };
  const race = (p) => Promise.race([p, failure]);

  let browser = null;
  try {
    // playwright-core launches with a fresh --user-data-dir of its own (a mkdtemp under the system
    // temp dir, removed on close), so no profile is shared between runs.
    browser = await chromium.launch({
      executablePath,
      headless: true,
      timeout: 60_000,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync', '--disable-quic'],
    });
    const context = await browser.newContext({
      httpCredentials: { username: args.username, password: args.password },
      viewport: { width: 1280, height: 900 },
      deviceScaleFactor: 1,
    });
    const page = await context.newPage();
    page.on('pageerror', (e) => fail(`page error: ${e.message}`));
    page.on('crash', () => fail('the page crashed'));
    page.on('console', (msg) => {
      if (msg.type() !== 'error') return;
      const loc = msg.location();
      const where = loc && loc.url ? ` (${loc.url}${loc.lineNumber ? `:${loc.lineNumber}` : ''})` : '';
      fail(`console error: ${msg.text()}${where}`);
    });
    page.on('requestfailed', (req) => {
      // a navigation or poll that never got an answer (refused, reset, aborted)
      const why = req.failure()?.errorText ?? 'failed';
      if (why !== 'net::ERR_ABORTED') fail(`request ${req.method()} ${req.url()} failed: ${why}`);
    });

    // Not raced against the page's failures: an HTTP error on the page itself also logs a console
    // error, and its status is the clearer message.
    let resp;
    try {
      resp = await page.goto(args.url, { waitUntil: 'load', timeout: NAV_TIMEOUT_MS });
    } catch (e) {
      throw new Error(`could not open ${args.url}: ${failed ? failed.message : e.message.split('\n')[0]}`);
    }
    if (!resp) throw new Error(`opening ${args.url} gave no response`);
    if (resp.status() === 401) {
      throw new Error(`${args.url} answered 401 Unauthorized: the credentials for user ${JSON.stringify(args.username)} were refused`);
    }
    if (!resp.ok()) throw new Error(`${args.url} answered HTTP ${resp.status()} ${resp.statusText()}`);
    if (failed) throw failed;

    try {
      await race(page.waitForFunction(() => Number(document.body && document.body.dataset.samples) >= 2,
        null, { timeout: READY_TIMEOUT_MS, polling: 200 }));
    } catch (e) {
      if (failed) throw failed;
      const state = await page.evaluate(() => ({
        samples: document.body?.dataset.samples ?? null,
        error: document.getElementById('error-line')?.textContent || '',
      })).catch(() => ({}));
      throw new Error(`timed out after ${READY_TIMEOUT_MS / 1000} s waiting for the dashboard to show 2 samples ` +
        `(samples=${state.samples ?? '?'}${state.error ? `, page says: ${state.error}` : ''})`);
    }
    const seen = await page.evaluate(() => document.body.dataset.updatedAt);
    try {
      await race(page.waitForFunction((u) => document.body.dataset.updatedAt !== u, seen,
        { timeout: FRESH_TIMEOUT_MS, polling: 100 }));
    } catch (e) {
      if (failed) throw failed;
      const err = await page.evaluate(() => document.getElementById('error-line')?.textContent || '').catch(() => '');
      throw new Error(`timed out after ${FRESH_TIMEOUT_MS / 1000} s waiting for a fresh update after updated_at=${seen}` +
        (err ? ` (page says: ${err})` : ''));
    }

    const { out, problems } = await race(page.evaluate(readFigures));
    if (problems.length) throw new Error(`the page's figures are not readable: ${problems.join('; ')}`);

    if (args.screenshot) {
      fs.mkdirSync(path.dirname(args.screenshot), { recursive: true });
      await race(page.screenshot({ path: args.screenshot, fullPage: true, timeout: 30_000 }));
    }
    if (failed) throw failed;
    process.stdout.write(JSON.stringify(out) + '\n');
  } finally {
    if (browser) await browser.close().catch(() => {});
  }
}

main().then(
  () => { process.exitCode = 0; },
  (e) => {
    process.stderr.write(`dashboard.mjs: FAILED: ${e && e.message ? e.message : e}\n`);
    process.exitCode = 1;
  },
);
