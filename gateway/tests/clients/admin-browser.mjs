// The admin page (GET /admin on the admin listener) in headless Chromium against a running
// gateway under load: sign-in refused with a wrong key, then accepted; the page's figures rise
// while this script connects clients and publishes; the cluster's nodes are listed; then a
// command makes the node unready and the readiness badge must turn red.
//
//   node admin-browser.mjs --admin http://127.0.0.1:APORT --public 127.0.0.1:PORT --key KEY
//        [--clients 24] [--sse 3] [--expect-nodes 2] [--unready-cmd 'shell command']
//        [--screenshot-dir DIR] [--hold-ms 0] [--timeout-ms 90000]
//
// Load: --clients WebSocket clients (`ws`, subprotocol ringcast.v1) subscribe to load.hot (two
// thirds) or load.warm, --sse Server-Sent Events streams read load.hot, and one publisher sends
// about 40 messages/s to load.hot and 10/s to load.warm until the end. The page must show at
// least clients + sse connections, both rooms with their subscribers, load.hot above 15 msg/s,
// and SLO writes in the `load` namespace.
// Screenshots (with --screenshot-dir): admin-page.png under load while ready (taken --hold-ms
// after the figures were seen, so the sparklines have a history), admin-page-not-ready.png
// after --unready-cmd.
//
// Last stdout line: {"ok":true,"wrong_key_refused":true,"before":{...},"under_load":{...},"red":{...},"ms":...}
// Exit 0 only when all of that held; 1 otherwise (with "error" and the phase in the JSON).

import { exec } from 'node:child_process';
import path from 'node:path';
import http from 'node:http';
import WebSocket from 'ws';
import { closeBrowser, launchChromium, openPage } from './browser.mjs';
import { finish, hardTimeout, makeLog, parseArgs, sleep } from './common.mjs';

const log = makeLog('admin-browser');
const started = Date.now();
let phase = 'parsing arguments';
const result = { ok: false, wrong_key_refused: false };
const pageProblems = [];

let browser;
let failing = false;
const sockets = [];
const streams = [];
let publishing = false;
function stopLoad() {
  publishing = false;
  for (const ws of sockets) ws.terminate();
  for (const req of streams) req.destroy();
}
async function fail(err) {
  const report = { ...result, phase, error: `${phase}: ${err.message ?? err}`, page_problems: pageProblems.slice(0, 10) };
  stopLoad();
  if (!failing && browser) {
    failing = true;
    await closeBrowser(browser, 2000).catch(() => {});
  }
  finish({ ...report, ms: Date.now() - started }, 1);
}
process.on('uncaughtException', fail);
process.on('unhandledRejection', fail);

let opts;
try {
  opts = parseArgs(process.argv.slice(2), {
    admin: { type: 'string', default: '' },
    public: { type: 'string', default: '' },
    key: { type: 'string', default: '' },
    clients: { type: 'int', default: 24 },
    sse: { type: 'int', default: 3 },
    'expect-nodes': { type: 'int', default: 0 },
    'unready-cmd': { type: 'string', default: '' },
    'screenshot-dir': { type: 'string', default: '' },
    'hold-ms': { type: 'int', default: 0 },
    'timeout-ms': { type: 'int', default: 90000 },
  });
} catch (e) {
  finish({ ...result, error: `bad arguments: ${e.message}` }, 1);
}
const argErrors = [];
if (!opts.admin) argErrors.push('--admin is required');
if (!opts.public) argErrors.push('--public is required');
if (!opts.key) argErrors.push('--key is required');
if (opts.clients < 3) argErrors.push('--clients must be at least 3');
if (argErrors.length) finish({ ...result, error: `bad arguments: ${argErrors.join('; ')}` }, 1);

hardTimeout(opts['timeout-ms'], () => ({ ...result, phase, page_problems: pageProblems.slice(0, 10) }));
const deadline = started + opts['timeout-ms'] - 3000;
const remaining = () => Math.max(1, deadline - Date.now());

/** One ringcast.v1 WebSocket client subscribed to `room`; resolves once `subscribed` came. */
function subscriber(room) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://${opts.public}/ws`, ['ringcast.v1']);
    sockets.push(ws);
    ws.on('error', reject);
    ws.on('message', (data) => {
      const ev = JSON.parse(data.toString());
      if (ev.ev === 'hello') ws.send(JSON.stringify({ op: 'subscribe', id: 1, room }));
      else if (ev.ev === 'subscribed') resolve(ws);
      else if (ev.ev === 'error') reject(new Error(`subscribe ${room}: ${JSON.stringify(ev)}`));
    });
  });
}

/** An SSE stream of `room`; resolves once the response head came. */
function sseStream(room) {
  return new Promise((resolve, reject) => {
    const req = http.get(`http://${opts.public}/sse?room=${encodeURIComponent(room)}`, (res) => {
      if (res.statusCode !== 200) return reject(new Error(`/sse answered ${res.statusCode}`));
      res.on('data', () => {});
      resolve(req);
    });
    streams.push(req);
    req.on('error', (e) => (publishing ? reject(e) : resolve(req)));
  });
}

/** Publishes to load.hot (4 of 5) and load.warm (1 of 5) every 20 ms until stopLoad(). */
async function publisher() {
  const ws = await new Promise((resolve, reject) => {
    const w = new WebSocket(`ws://${opts.public}/ws`, ['ringcast.v1']);
    sockets.push(w);
    w.on('open', () => resolve(w));
    w.on('error', reject);
  });
  publishing = true;
  let n = 0;
  (async () => {
    while (publishing && ws.readyState === WebSocket.OPEN) {
      n += 1;
      const room = n % 5 === 0 ? 'load.warm' : 'load.hot';
      ws.send(JSON.stringify({ op: 'publish', id: n, room, data: { n, at: Date.now() } }));
      await sleep(20);
    }
  })();
}

/** What the page shows now. */
function readPage(page) {
  return page.evaluate(() => {
    const text = (id) => document.getElementById(id)?.textContent ?? '';
    const rooms = {};
    for (const tr of document.querySelectorAll('#room-rows tr')) {
      const td = [...tr.children].map((c) => c.textContent);
      rooms[tr.dataset.room] = { subscribers: Number(td[1]), rate: Number(td[2]), messages: Number(td[3]) };
    }
    const slo = {};
    for (const tr of document.querySelectorAll('#slo-rows tr')) {
      const td = [...tr.children].map((c) => c.textContent);
      slo[td[0]] = { writes: Number(td[1]), p99: td[3], status: td[6] };
    }
    const badge = document.getElementById('ready');
    return {
      app_visible: !document.getElementById('app').hidden,
      login_visible: !document.getElementById('login').hidden,
      login_error: text('login-error'),
      status: text('status'),
      ready: badge.dataset.ready,
      ready_text: badge.textContent,
      ready_reason: text('ready-reason'),
      ready_colour: getComputedStyle(badge).backgroundColor,
      connections: Number(text('conn-total')),
      rate_total: Number(text('rate-total')),
      rooms,
      slo,
      broker_link: text('broker-link'),
      broker_canary: text('broker-canary'),
      cluster_nodes: document.getElementById('cluster').hidden ? -1 : document.querySelectorAll('#node-rows tr').length,
      driver: text('driver'),
      shards: text('shards'),
      version: text('version'),
    };
  });
}

/** Polls the page until `ok(state)` holds; throws with the last state otherwise. */
async function waitPage(page, what, ok) {
  let state;
  for (;;) {
    state = await readPage(page);
    if (ok(state)) return state;
    if (Date.now() >= deadline) throw new Error(`timed out waiting for ${what}; the page shows ${JSON.stringify(state)}`);
    await sleep(200);
  }
}

const RED = 'rgb(207, 34, 46)';
const GREEN = 'rgb(26, 127, 55)';

try {
  phase = 'launching chromium';
  browser = await launchChromium(remaining());
  const page = await openPage(browser, { viewport: { width: 1280, height: 600 }, problems: pageProblems, log });

  phase = 'opening the page';
  const resp = await page.goto(`${opts.admin}/admin`, { timeout: remaining() });
  if (resp.status() !== 200) throw new Error(`GET /admin answered ${resp.status()}`);
  await page.waitForSelector('#login:not([hidden])', { timeout: remaining() });

  phase = 'signing in with a wrong key';
  await page.fill('#key', `${opts.key}-wrong`);
  await page.click('#login button[type=submit]');
  await waitPage(page, 'the wrong key to be refused', (s) => s.login_visible && s.login_error.includes('Wrong API key'));
  result.wrong_key_refused = true;

  phase = 'signing in';
  await page.fill('#key', opts.key);
  await page.click('#login button[type=submit]');
  const before = await waitPage(page, 'the first snapshot, ready', (s) => s.app_visible && s.status.startsWith('updated') && s.ready === 'true');
  if (before.ready_colour !== GREEN) throw new Error(`the ready badge is ${before.ready_colour}, not green`);
  result.before = { connections: before.connections, rate_total: before.rate_total, ready: before.ready, driver: before.driver, shards: before.shards };

  phase = 'starting the load';
  const hot = Math.ceil((opts.clients * 2) / 3);
  const subs = [];
  for (let i = 0; i < opts.clients; i++) subs.push(subscriber(i < hot ? 'load.hot' : 'load.warm'));
  for (let i = 0; i < opts.sse; i++) subs.push(sseStream('load.hot'));
  await Promise.all(subs);
  await publisher();
  log(`${opts.clients} WebSocket and ${opts.sse} SSE subscribers, publishing`);

  phase = 'waiting for the page to show the load';
  const wanted = before.connections + opts.clients + opts.sse; // the publisher comes on top
  const loaded = await waitPage(page, `at least ${wanted} connections, both rooms, load.hot over 15 msg/s and SLO writes in "load"`, (s) =>
    s.connections >= wanted &&
    s.rooms['load.hot']?.subscribers >= hot + opts.sse &&
    s.rooms['load.warm']?.subscribers >= opts.clients - hot &&
    s.rooms['load.hot']?.rate > 15 &&
    s.rate_total > before.rate_total &&
    s.slo.load?.writes > 0 &&
    (opts['expect-nodes'] === 0 || s.cluster_nodes === opts['expect-nodes']),
  );
  result.under_load = {
    connections: loaded.connections,
    rate_total: loaded.rate_total,
    rooms: loaded.rooms,
    slo_load: loaded.slo.load,
    cluster_nodes: loaded.cluster_nodes,
    broker_link: loaded.broker_link,
  };
  // A later snapshot must differ: the message counts keep rising while the publisher runs.
  const later = await waitPage(page, 'load.hot message count to rise again', (s) => s.rooms['load.hot']?.messages > loaded.rooms['load.hot'].messages);
  result.under_load.messages_later = later.rooms['load.hot'].messages;
  await sleep(Math.min(opts['hold-ms'], remaining()));
  if (opts['screenshot-dir']) await page.screenshot({ path: path.join(opts['screenshot-dir'], 'admin-page.png'), fullPage: true, timeout: remaining() });

  if (opts['unready-cmd']) {
    phase = 'making the node unready';
    await new Promise((resolve, reject) =>
      exec(opts['unready-cmd'], { timeout: remaining() }, (e, stdout, stderr) => (e ? reject(new Error(`${e.message} ${stderr}`)) : resolve(stdout))),
    );
    phase = 'waiting for the readiness badge to turn red';
    const red = await waitPage(page, 'readiness to turn red', (s) => s.ready === 'false');
    if (red.ready_colour !== RED) throw new Error(`the not-ready badge is ${red.ready_colour}, not red`);
    result.red = { ready: red.ready, text: red.ready_text, reason: red.ready_reason, colour: red.ready_colour, broker_link: red.broker_link, broker_canary: red.broker_canary };
    if (opts['screenshot-dir']) await page.screenshot({ path: path.join(opts['screenshot-dir'], 'admin-page-not-ready.png'), fullPage: true, timeout: remaining() });
  }

  const errors = pageProblems.filter((p) => p.startsWith('pageerror'));
  if (errors.length) throw new Error(`the page threw: ${errors.join(' | ')}`);
  result.ok = true;
  phase = 'closing';
  stopLoad();
  await closeBrowser(browser, 5000);
  finish({ ...result, ms: Date.now() - started }, 0);
} catch (e) {
  fail(e);
}
