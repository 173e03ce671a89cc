#!/usr/bin/env node
// Real-browser HLS playback check: plays an HLS URL with hls.js in headless
// Chromium for N seconds and reports what happened as JSON on stdout.
//
//   node tests/web/play.mjs --url http://127.0.0.1:PORT/live.m3u8 --seconds 10 [--with-credentials]
//
// See README.md beside this file. Exit status: 0 = played (currentTime
// advanced by >= 60% of --seconds, no fatal error), 1 = did not, 2 = bad
// arguments. stdout carries exactly one JSON object; diagnostics go to stderr.

import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const HLS_JS = path.join(HERE, 'node_modules', 'hls.js', 'dist', 'hls.min.js');
const PLAYER_HTML = path.join(HERE, 'player.html');
const PASS_FRACTION = 0.6;
const MAX_LIST = 2000; // cap on each reported list, so a runaway page cannot flood stdout
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

const USAGE = `usage: node play.mjs --url URL [--seconds N] [--with-credentials]
                    [--chromium PATH] [--page-host HOST] [--exit-with-stdin]
  --url URL            HLS playlist to play (required)
  --seconds N          how long to play (default 10)
  --with-credentials   hls.js sends cookies cross-origin (xhr.withCredentials = true)
  --chromium PATH      browser binary (default $CHROMIUM_PATH or /usr/bin/chromium)
  --page-host HOST     host name in the player page's URL (default 127.0.0.1)
  --exit-with-stdin    stop (and clean up) when stdin closes: for callers that
                       keep a pipe open, so the browser dies with them`;

function log(...args) {
  process.stderr.write(`[play.mjs] ${args.join(' ')}\n`);
}

function parseArgs(argv) {
  const opts = {
    url: null,
    seconds: 10,
    withCredentials: false,
    chromium: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
    pageHost: '127.0.0.1',
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
      case '--seconds': opts.seconds = Number(value()); break;
      case '--with-credentials': opts.withCredentials = true; break;
      case '--chromium': opts.chromium = value(); break;
      case '--page-host': opts.pageHost = value(); break;
      case '--exit-with-stdin': opts.exitWithStdin = true; break;
      case '-h': case '--help': process.stderr.write(USAGE + '\n'); process.exit(0); break;
      default: throw new Error(`unknown argument ${a}`);
    }
  }
  if (!opts.url) throw new Error('--url is required');
  const u = new URL(opts.url);
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error('--url must be http(s)');
  if (!Number.isFinite(opts.seconds) || opts.seconds <= 0 || opts.seconds > 3600) {
    throw new Error('--seconds must be a number in (0, 3600]');
  }
  return opts;
}

const result = {
  ok: false,
  url: null,
  seconds: null,
  with_credentials: false,
  page_url: null,
  browser_version: null,
  hls_version: null,
  codecs: null,
  currentTime: 0,
  start_time: null,
  played_seconds: 0,
  startup_ms: null,
  waiting_events: 0,
  video: null,
  elapsed_ms: 0,
  fragments: [],
  playlists: [],
  // Steering manifests loaded: "PATHWAY-PRIORITY joined by ',' <- url"
  // (hls.js names its pathway in the URL's _HLS_pathway).
  steering: [],
  // Longest wall time (ms) in which currentTime did not advance, once
  // playing, sampled every 250 ms.
  longest_stall_ms: null,
  errors: [],
  console: [],
};
const t_start = Date.now();
let fatalSeen = false;
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
result.seconds = opts.seconds;
result.with_credentials = opts.withCredentials;

// --- cleanup bookkeeping ----------------------------------------------------
let context = null; // Playwright BrowserContext (persistent: owns the browser)
let server = null;
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
  if (server) {
    const s = server;
    server = null;
    s.closeAllConnections?.();
    await new Promise((resolve) => s.close(() => resolve()));
  }
  removeUserDataDir();
}

// Last resort: whatever happens, we are gone N + 75 s after start. On exit,
// playwright-core kills the browser it launched (and its process group).
const hardTimer = setTimeout(() => {
  push(result.errors, `fatal overall timeout of ${opts.seconds + 75} s hit during cleanup`);
  printResult(1);
  removeUserDataDir();
  process.exit(1);
}, (opts.seconds + 75) * 1000);
hardTimer.unref();
// Soft deadline: leave 5 s of the overall budget for a clean shutdown.
const softTimer = setTimeout(() => abort(`overall timeout: not done after ${opts.seconds + 70} s`),
  (opts.seconds + 70) * 1000);
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

// --- the static server that serves the player page --------------------------
function startServer() {
  const html = fs.readFileSync(PLAYER_HTML);
  const hlsJs = fs.readFileSync(HLS_JS);
  const srv = http.createServer((req, res) => {
    const p = new URL(req.url, 'http://x').pathname;
    let body = null;
    let type = null;
    if (p === '/' || p === '/index.html') {
      body = html; type = 'text/html; charset=utf-8';
    } else if (p === '/hls.min.js') {
      body = hlsJs; type = 'text/javascript; charset=utf-8';
    } else if (p === '/favicon.ico') {
      res.writeHead(204).end();
      return;
    }
    if (!body) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
      return;
    }
    res.writeHead(200, { 'content-type': type, 'content-length': body.length, 'cache-control': 'no-store' });
    res.end(req.method === 'HEAD' ? undefined : body);
  });
  return new Promise((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => resolve(srv));
  });
}

// --- the run ----------------------------------------------------------------
function snapshotInPage() {
  const v = document.getElementById('video');
  const s = window.__state || {};
  let played = 0;
  for (let i = 0; i < v.played.length; i++) played += v.played.end(i) - v.played.start(i);
  const q = v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality() : null;
  return {
    currentTime: v.currentTime,
    played,
    paused: v.paused,
    readyState: v.readyState,
    startTime: s.startTime ?? null,
    startupMs: s.firstPlayingAt == null ? null : s.firstPlayingAt - s.startedAt,
    waiting: s.waiting || 0,
    fatal: !!s.fatal,
    video: {
      width: v.videoWidth,
      height: v.videoHeight,
      decoded_frames: q ? q.totalVideoFrames : null,
      dropped_frames: q ? q.droppedVideoFrames : null,
      // Chromium-only counters: proof that both tracks were really decoded.
      video_decoded_bytes: v.webkitVideoDecodedByteCount ?? null,
      audio_decoded_bytes: v.webkitAudioDecodedByteCount ?? null,
    },
  };
}

function applySnapshot(snap) {
  result.currentTime = snap.currentTime;
  result.played_seconds = Math.round(snap.played * 1000) / 1000;
  result.start_time = snap.startTime;
  result.startup_ms = snap.startupMs == null ? null : Math.round(snap.startupMs);
  result.waiting_events = snap.waiting;
  result.video = snap.video;
  if (snap.fatal) fatalSeen = true;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function run() {
  const nodeMajor = Number(process.versions.node.split('.')[0]);
  if (nodeMajor < 20) {
    throw new Error(`Node.js ${process.versions.node} is too old: playwright-core needs >= 20`);
  }
  if (!fs.existsSync(HLS_JS)) {
    throw new Error(`${HLS_JS} missing: run \`npm ci --prefix tests/web\``);
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

  server = await startServer();
  const port = server.address().port;
  result.page_url = `http://${opts.pageHost}:${port}/?src=${encodeURIComponent(opts.url)}` +
    (opts.withCredentials ? '&cred=1' : '');
  if (aborted) return;

  userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'castgate-chromium-'));
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: opts.chromium,
    headless: true,
    args: CHROMIUM_ARGS,
    timeout: 60000, // a cold Chromium on a busy 2-core machine
    handleSIGINT: false,
    handleSIGTERM: false,
    handleSIGHUP: false,
    viewport: { width: 640, height: 480 },
  });
  if (aborted) return;
  result.browser_version = context.browser()?.version() ?? null;

  await context.exposeBinding('__report', (_source, kind, value) => {
    switch (kind) {
      case 'fragment': push(result.fragments, value); break;
      case 'playlist': push(result.playlists, value); break;
      case 'steering': push(result.steering, value); break;
      case 'error':
        push(result.errors, value);
        if (String(value).startsWith('fatal')) fatalSeen = true;
        break;
      case 'hls': result.hls_version = value.version; break;
      case 'codecs': result.codecs = value; break;
      case 'playing': log(`playing from ${value.startTime} after ${Math.round(value.startupMs)} ms`); break;
      default: break;
    }
  });
  const page = context.pages()[0] ?? await context.newPage();
  page.on('console', (m) => push(result.console, `${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => push(result.console, `pageerror: ${e.message}`));
  page.on('requestfailed', (r) => push(result.console, `requestfailed: ${r.url()} ${r.failure()?.errorText ?? ''}`));
  page.on('crash', () => { push(result.errors, 'fatal page crashed'); fatalSeen = true; });

  log(`chromium ${result.browser_version}: opening ${result.page_url}`);
  await page.goto(result.page_url, { waitUntil: 'load', timeout: 15000 });

  const playUntil = Date.now() + opts.seconds * 1000;
  let lastTime = null;
  let advancedAt = null;
  while (Date.now() < playUntil && !fatalSeen && !aborted) {
    await Promise.race([sleep(Math.min(250, Math.max(0, playUntil - Date.now()))), abortPromise]);
    if (aborted) break;
    const snap = await page.evaluate(snapshotInPage);
    applySnapshot(snap);
    const now = Date.now();
    if (snap.startTime !== null && (lastTime === null || snap.currentTime > lastTime + 0.01)) {
      lastTime = snap.currentTime;
      advancedAt = now;
    }
    if (advancedAt !== null) {
      result.longest_stall_ms = Math.max(result.longest_stall_ms ?? 0, now - advancedAt);
    }
  }
  if (!aborted) applySnapshot(await page.evaluate(snapshotInPage));
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
result.ok = !aborted && !fatalSeen && result.played_seconds >= PASS_FRACTION * opts.seconds;
exitCode = result.ok ? 0 : 1;
log(`${result.ok ? 'OK' : 'FAILED'}: played ${result.played_seconds} s of ${opts.seconds} s, ` +
  `${result.fragments.length} fragments, ${result.errors.length} errors`);
printResult(exitCode);
process.exit(exitCode);
