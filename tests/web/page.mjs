#!/usr/bin/env node
// Reads castgate's status page (src/admin/page.html, served at GET / on the
// admin listener) the way an operator's browser shows it: opens it in
// headless Chromium, waits until it has rendered /status.json and refreshed
// once more, and prints what the DOM shows as one JSON line on stdout.
//
//   node tests/web/page.mjs --url http://127.0.0.1:PORT/ [--wait-ms 3000] [--screenshot out.png]
//
// Exit status: 0 = the page rendered (#total-listeners filled and a second
// refresh of /status.json finished within --wait-ms of page load), 1 = it
// did not, 2 = bad arguments. stdout carries exactly one JSON object;
// diagnostics go to stderr. Launch flags and cleanup follow play.mjs.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const MAX_LIST = 200; // cap on reported errors, so a runaway page cannot flood stdout
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-proxy-server', // loopback only: never route through an inherited proxy
];

const USAGE = `usage: node page.mjs --url URL [--wait-ms N] [--screenshot FILE]
                    [--viewport WxH] [--color-scheme light|dark]
                    [--chromium PATH] [--exit-with-stdin]
  --url URL             the status page (castgate's admin GET /)
  --wait-ms N           how long after page load to wait for the page to
                        render and refresh once more (default 3000; the page
                        refreshes every 2 s)
  --screenshot FILE     save a full-page PNG there
  --viewport WxH        browser viewport (default 1280x800)
  --color-scheme S      emulated prefers-color-scheme: light or dark (default light)
  --chromium PATH       browser binary (default $CHROMIUM_PATH or /usr/bin/chromium)
  --exit-with-stdin     stop (and clean up) when stdin closes`;

function log(...args) {
  process.stderr.write(`[page.mjs] ${args.join(' ')}\n`);
}

function parseArgs(argv) {
  const opts = {
    url: null,
    waitMs: 3000,
    screenshot: null,
    viewport: { width: 1280, height: 800 },
    colorScheme: 'light',
    chromium: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
    exitWithStdin: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    switch (a) {
      case '--url': opts.url = value(); break;
      case '--wait-ms': opts.waitMs = Number(value()); break;
      case '--screenshot': opts.screenshot = value(); break;
      case '--viewport': {
        const m = /^(\d+)x(\d+)$/.exec(value());
        if (!m) throw new Error('--viewport must be WIDTHxHEIGHT, e.g. 390x844');
        opts.viewport = { width: Number(m[1]), height: Number(m[2]) };
        break;
      }
      case '--color-scheme': opts.colorScheme = value(); break;
      case '--chromium': opts.chromium = value(); break;
      case '--exit-with-stdin': opts.exitWithStdin = true; break;
      case '-h': case '--help': process.stderr.write(USAGE + '\n'); process.exit(0); break;
      default: throw new Error(`unknown argument ${a}`);
    }
  }
  if (!opts.url) throw new Error('--url is required');
  const u = new URL(opts.url);
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error('--url must be http(s)');
  if (!Number.isFinite(opts.waitMs) || opts.waitMs <= 0 || opts.waitMs > 120000) {
    throw new Error('--wait-ms must be a number in (0, 120000]');
  }
  if (!['light', 'dark'].includes(opts.colorScheme)) throw new Error('--color-scheme must be light or dark');
  return opts;
}

const result = {
  ok: false,
  url: null,
  total_listeners: null,
  streams: {},
  edges: {},
  errors: [],
  error_banner: null, // text of #error when visible
  generation: null,
  refreshed: null,
  refreshes: 0, // /status.json fetches the page finished (ok or not)
  refreshes_ok: 0,
  screenshot: null,
  browser_version: null,
  elapsed_ms: 0,
};
const t_start = Date.now();
let printed = false;

function push(list, item) {
  if (list.length < MAX_LIST) list.push(String(item));
}

function printResult(exitCode) {
  if (printed) return;
  printed = true;
  result.elapsed_ms = Date.now() - t_start;
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exitCode = exitCode;
}

// --- argument parsing -------------------------------------------------------
let opts;
try {
  opts = parseArgs(process.argv.slice(2));
} catch (e) {
  push(result.errors, `fatal bad arguments: ${e.message}`);
  process.stderr.write(USAGE + '\n');
  printResult(2);
  process.exit(2);
}
result.url = opts.url;

// --- cleanup bookkeeping ----------------------------------------------------
let context = null; // Playwright BrowserContext (persistent: owns the browser)
let userDataDir = null;
let aborted = null; // reason string once we must stop early
let abortWake = () => {};
const abortPromise = new Promise((resolve) => { abortWake = resolve; });

function abort(reason) {
  if (aborted) return;
  aborted = reason;
  push(result.errors, `fatal ${reason}`);
  log(reason);
  abortWake();
}

function removeUserDataDir() {
  if (!userDataDir) return;
  try {
    fs.rmSync(userDataDir, { recursive: true, force: true, maxRetries: 3 });
  } catch (e) {
    log(`could not remove ${userDataDir}: ${e.message}`);
  }
  userDataDir = null;
}

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

async function cleanup() {
  if (context) {
    const c = context;
    context = null;
    try {
      await withTimeout(c.close(), 5000, 'closing the browser');
    } catch (e) {
      log(e.message); // the exit handler of playwright-core kills the browser process anyway
    }
  }
  removeUserDataDir();
}

// Last resort: whatever happens, we are gone --wait-ms + 90 s after start.
// On exit, playwright-core kills the browser it launched.
const budget = Math.ceil(opts.waitMs / 1000) + 90;
const hardTimer = setTimeout(() => {
  push(result.errors, `fatal overall timeout of ${budget} s hit during cleanup`);
  printResult(1);
  removeUserDataDir();
  process.exit(1);
}, budget * 1000);
hardTimer.unref();
// Soft deadline: leave 5 s of the overall budget for a clean shutdown.
const softTimer = setTimeout(() => abort(`overall timeout: not done after ${budget - 5} s`),
  (budget - 5) * 1000);
softTimer.unref();

for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => abort(`got ${sig}`));
}
process.on('exit', removeUserDataDir);
if (opts.exitWithStdin) {
  process.stdin.on('end', () => abort('stdin closed (caller went away)'));
  process.stdin.on('error', () => abort('stdin error (caller went away)'));
  process.stdin.resume();
}

// --- reading the page -------------------------------------------------------
// Runs in the page. Numbers are read as shown ("1,234" -> 1234).
function readPage() {
  const num = (text) => {
    const digits = String(text ?? '').replace(/[^0-9]/g, '');
    return digits === '' ? null : Number(digits);
  };
  const text = (node) => (node ? node.textContent.replace(/\s+/g, ' ').trim() : null);
  // The number in a cell: its `.n` element if it has one, else the whole text.
  const cellNum = (cell) => (cell ? num(text(cell.querySelector('.n') ?? cell)) : null);
  const total = document.getElementById('total-listeners');
  const streams = {};
  for (const row of document.querySelectorAll('#streams tr[data-stream]')) {
    streams[row.getAttribute('data-stream')] = cellNum(row.querySelector('.listeners'));
  }
  const edges = {};
  for (const row of document.querySelectorAll('#edges tr[data-edge]')) {
    edges[row.getAttribute('data-edge')] = {
      state: text(row.querySelector('.state')),
      listeners: cellNum(row.querySelector('.listeners')),
      load: text(row.querySelector('.load')),
      last_error: text(row.querySelector('.last-error')),
      poll_age: text(row.querySelector('.poll-age')),
    };
  }
  const banner = document.getElementById('error');
  const bannerVisible = !!banner && !banner.hidden && banner.getClientRects().length > 0 &&
    text(banner) !== '';
  const root = document.documentElement;
  return {
    total_text: text(total),
    total_listeners: total ? num(text(total)) : null,
    streams,
    edges,
    error_banner: bannerVisible ? text(banner) : null,
    generation: text(document.getElementById('generation')),
    refreshed: text(document.getElementById('refreshed')),
    refreshes: Number(root.getAttribute('data-refreshes') || 0),
    refreshes_ok: Number(root.getAttribute('data-refreshes-ok') || 0),
  };
}

function apply(snap) {
  result.total_listeners = snap.total_listeners;
  result.streams = snap.streams;
  result.edges = snap.edges;
  result.error_banner = snap.error_banner;
  result.generation = snap.generation;
  result.refreshed = snap.refreshed;
  result.refreshes = snap.refreshes;
  result.refreshes_ok = snap.refreshes_ok;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

let rendered = false;

async function run() {
  const nodeMajor = Number(process.versions.node.split('.')[0]);
  if (nodeMajor < 20) {
    throw new Error(`Node.js ${process.versions.node} is too old: playwright-core needs >= 20`);
  }
  let chromium;
  try {
    ({ chromium } = await import('playwright-core'));
  } catch (e) {
    throw new Error(`cannot load playwright-core (${e.message}): run \`npm ci --prefix tests/web\``);
  }
  if (!fs.existsSync(opts.chromium)) {
    throw new Error(`${opts.chromium} missing: run \`apt-get install -y chromium\``);
  }

  userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'castgate-chromium-'));
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: opts.chromium,
    headless: true,
    args: CHROMIUM_ARGS,
    timeout: 60000, // a cold Chromium on a busy 2-core machine
    handleSIGINT: false,
    handleSIGTERM: false,
    handleSIGHUP: false,
    viewport: opts.viewport,
    colorScheme: opts.colorScheme,
  });
  if (aborted) return;
  result.browser_version = context.browser()?.version() ?? null;

  const page = context.pages()[0] ?? await context.newPage();
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') push(result.errors, `console ${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => push(result.errors, `pageerror: ${e.message}`));
  page.on('requestfailed', (r) => push(result.errors, `requestfailed: ${r.url()} ${r.failure()?.errorText ?? ''}`));
  page.on('crash', () => abort('page crashed'));

  log(`chromium ${result.browser_version}: opening ${opts.url}`);
  const resp = await page.goto(opts.url, { waitUntil: 'load', timeout: 15000 });
  if (!resp) throw new Error(`no response for ${opts.url}`);
  const type = resp.headers()['content-type'] ?? '';
  if (resp.status() !== 200 || !type.startsWith('text/html')) {
    throw new Error(`${opts.url} answered ${resp.status()} ${type}, not a 200 text/html page`);
  }

  // Done when the page shows a total and has finished a second refresh
  // (the first render plus one timer-driven refresh, ok or not).
  const until = Date.now() + opts.waitMs;
  let snap = null;
  while (!aborted) {
    snap = await page.evaluate(readPage);
    if (snap.total_text && snap.refreshes >= 2) { rendered = true; break; }
    if (Date.now() >= until) break;
    await Promise.race([sleep(100), abortPromise]);
  }
  if (aborted) return;
  apply(snap);
  if (!rendered) {
    push(result.errors, `fatal page not rendered within ${opts.waitMs} ms: #total-listeners ` +
      `${JSON.stringify(snap.total_text)}, ${snap.refreshes} refreshes`);
  }
  if (opts.screenshot) {
    await page.screenshot({ path: opts.screenshot, fullPage: true, timeout: 10000 });
    result.screenshot = path.resolve(opts.screenshot);
  }
}

let exitCode = 1;
try {
  await Promise.race([run(), abortPromise]);
} catch (e) {
  if (!aborted) push(result.errors, `fatal ${e.message.split('\n')[0]}`);
  log(e.stack || e.message);
}
try {
  await cleanup();
} catch (e) {
  log(`cleanup: ${e.message}`);
}
result.ok = !aborted && rendered;
exitCode = result.ok ? 0 : 1;
log(`${result.ok ? 'OK' : 'FAILED'}: total ${result.total_listeners}, ` +
  `${Object.keys(result.streams).length} streams, ${Object.keys(result.edges).length} edges, ` +
  `${result.refreshes} refreshes, ${result.errors.length} errors`);
printResult(exitCode);
process.exit(exitCode);
