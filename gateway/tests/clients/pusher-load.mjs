// Load test of a Pusher Channels (protocol 7) server: N subscribers over C public channels, one
// publisher triggering R events/s through the HTTP API (the `pusher` server lib), end-to-end
// latency, loss, duplicates and reordering. One process; the clock is shared, so latency is
// receive time - the time the publisher called trigger().
//
//   node pusher-load.mjs --host 127.0.0.1 --port P --app-id ID --key K --secret S
//        --subscribers N --channels C --rate R --duration-secs D
//        [--client ws|pusher-js] [--payload-bytes 0] [--http-concurrency 16] [--connect-concurrency 64]
//        [--drain-ms 5000] [--deflate] [--timeout-ms <D*1000 + 120000>] [--channel-prefix load]
//
// Subscribers: `--client ws` (default) is a raw `ws` socket per subscriber speaking exactly what
// pusher-js sends (same URL /app/KEY?protocol=7&client=js&version=8.6.0&flash=false, the same
// pusher:subscribe frame, pusher:pong to the server's pusher:ping): hundreds or thousands fit in
// one process. `--client pusher-js` runs real pusher-js clients (heavier: timers, strategies,
// and a decode of every frame; fine for up to a few hundred).
// Subscriber i is on channel <prefix>-<nonce>-<i % C>. Event k goes to channel k % C with
// data '{"s":<seq in channel>,"t":<send time, ms>,"p":"<padding>"}' (a string, sent as-is).
// Every subscriber must receive every event of its channel that the API accepted (HTTP 200):
// lost = expected - distinct received; duplicated = received - distinct; out_of_order counts
// events that arrived after a later one of the same channel.
//
// Last stdout line: the JSON report; "ok" iff all subscribed, no publish error, lost == 0 and
// duplicated == 0. Exit 0 iff ok; 1 otherwise; 2 for bad arguments.

import http from 'node:http';
import { performance } from 'node:perf_hooks';
import WebSocket from 'ws';
import { finish, hardTimeout, makeLog, nonce, parseArgs, sleep } from './common.mjs';
import {
  APP_ARGS,
  PUSHER_JS_VERSION,
  PUSHER_LIB_VERSION,
  appArgErrors,
  capturePusherJsLog,
  makeClient,
  makeServerLib,
} from './pusher-common.mjs';

const log = makeLog('pusher-load');
const started = Date.now();
let phase = 'parsing arguments';

let opts;
try {
  opts = parseArgs(process.argv.slice(2), {
    ...APP_ARGS,
    subscribers: { type: 'int', default: 100 },
    channels: { type: 'int', default: 10 },
    rate: { type: 'int', default: 100 },
    'duration-secs': { type: 'int', default: 10 },
    client: { type: 'string', default: 'ws' },
    'payload-bytes': { type: 'int', default: 0 },
    'http-concurrency': { type: 'int', default: 16 },
    'connect-concurrency': { type: 'int', default: 64 },
    'drain-ms': { type: 'int', default: 5000 },
    deflate: { type: 'bool', default: false },
    'timeout-ms': { type: 'int', default: 0 },
    'channel-prefix': { type: 'string', default: 'load' },
    verbose: { type: 'bool', default: false },
  });
} catch (e) {
  finish({ ok: false, error: `bad arguments: ${e.message}` }, 2);
}
const argErrors = appArgErrors(opts);
for (const k of ['subscribers', 'channels', 'rate', 'duration-secs', 'http-concurrency', 'connect-concurrency']) if (!(opts[k] >= 1)) argErrors.push(`--${k} must be >= 1`);
if (opts.channels > opts.subscribers) argErrors.push('--channels must be <= --subscribers (every channel needs a subscriber)');
if (!['ws', 'pusher-js'].includes(opts.client)) argErrors.push("--client must be 'ws' or 'pusher-js'");
if (opts['payload-bytes'] < 0) argErrors.push('--payload-bytes must be >= 0');
if (argErrors.length) finish({ ok: false, error: `bad arguments: ${argErrors.join('; ')}` }, 2);

const { host, port, key, secret } = opts;
const appId = opts['app-id'];
const N = opts.subscribers;
const C = opts.channels;
const R = opts.rate;
const D = opts['duration-secs'];
const TOTAL = R * D;
const perChannelMax = Math.ceil(TOTAL / C);
const timeoutMs = opts['timeout-ms'] || D * 1000 + 120000;
const RUN = nonce();
const channelName = (c) => `${opts['channel-prefix']}-${RUN}-${c}`;
const url = `ws://${host}:${port}/app/${key}?protocol=7&client=js&version=${PUSHER_JS_VERSION}&flash=false`;
capturePusherJsLog({ verbose: opts.verbose, log });

const agent = new http.Agent({ keepAlive: true, maxSockets: opts['http-concurrency'] });
const lib = makeServerLib({ host, port, appId, key, secret, agent, timeout: 30000 });

// ------------------------------------------------------------------ subscriber state

/** Per subscriber: which seqs of its channel arrived (bitmap), counts, last seq. */
const subs = [];
let latencies = new Float64Array(Math.min(Math.max(TOTAL * Math.ceil(N / C), 1024), 50_000_000));
let latCount = 0;
let latDropped = 0; // samples beyond the array (never with the default cap unless > 50M deliveries)
const counters = { received: 0, duplicated: 0, out_of_order: 0, unknown_frames: 0, server_errors: [], closes: [] };

function record(s, seq, lat) {
  counters.received++;
  if (seq < 0 || seq >= perChannelMax) {
    counters.unknown_frames++;
    return;
  }
  if (s.seen[seq]) {
    counters.duplicated++;
    return;
  }
  s.seen[seq] = 1;
  s.distinct++;
  if (seq < s.lastSeq) counters.out_of_order++;
  else s.lastSeq = seq;
  if (latCount < latencies.length) latencies[latCount++] = lat;
  else latDropped++;
}

function newSub(i) {
  return { i, channel: i % C, seen: new Uint8Array(perChannelMax), distinct: 0, lastSeq: -1, connected: false, subscribed: false, connectMs: null, subscribeMs: null, closed: null };
}

/** A raw ws subscriber, speaking what pusher-js speaks. Resolves when subscribed (or fails). */
function rawSubscriber(s) {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const ws = new WebSocket(url, { perMessageDeflate: opts.deflate, handshakeTimeout: 20000 });
    s.ws = ws;
    const name = channelName(s.channel);
    ws.on('message', (buf) => {
      const now = performance.now();
      let m;
      try {
        m = JSON.parse(buf.toString());
      } catch {
        counters.unknown_frames++;
        return;
      }
      switch (m.event) {
        case 'load': {
          let d;
          try {
            d = typeof m.data === 'string' ? JSON.parse(m.data) : m.data;
          } catch {
            counters.unknown_frames++;
            return;
          }
          if (m.channel !== name) {
            counters.unknown_frames++;
            return;
          }
          record(s, d.s, now - d.t);
          return;
        }
        case 'pusher:connection_established':
          s.connected = true;
          s.connectMs = now - t0;
          ws.send(JSON.stringify({ event: 'pusher:subscribe', data: { auth: '', channel: name } }));
          return;
        case 'pusher_internal:subscription_succeeded':
          if (m.channel === name) {
            s.subscribed = true;
            s.subscribeMs = now - t0;
            resolve();
          }
          return;
        case 'pusher:ping':
          ws.send('{"event":"pusher:pong","data":{}}');
          return;
        case 'pusher:pong':
          return;
        case 'pusher:error':
        case 'pusher:subscription_error':
          if (counters.server_errors.length < 20) counters.server_errors.push({ sub: s.i, frame: m });
          return;
        default:
          counters.unknown_frames++;
      }
    });
    ws.on('close', (code, reason) => {
      s.closed = { code, reason: reason.toString() };
      if (counters.closes.length < 20) counters.closes.push({ sub: s.i, code, reason: reason.toString(), at_ms: Date.now() - started });
      resolve();
    });
    ws.on('error', (e) => {
      s.error = e.message;
    });
  });
}

/** A pusher-js subscriber. */
function pusherJsSubscriber(s) {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const c = makeClient({ host, port, key, authLib: lib, name: `sub${s.i}`, log: opts.verbose ? log : () => {} });
    s.client = c;
    c.pusher.connection.bind('connected', () => {
      if (!s.connected) {
        s.connected = true;
        s.connectMs = performance.now() - t0;
      }
    });
    c.pusher.connection.bind('state_change', ({ current }) => {
      if (current === 'failed' || current === 'unavailable') {
        if (counters.closes.length < 20) counters.closes.push({ sub: s.i, state: current, at_ms: Date.now() - started });
        if (current === 'failed') resolve();
      }
    });
    const ch = c.pusher.subscribe(channelName(s.channel));
    ch.bind('pusher:subscription_succeeded', () => {
      s.subscribed = true;
      s.subscribeMs = performance.now() - t0;
      resolve();
    });
    ch.bind('pusher:subscription_error', (e) => {
      if (counters.server_errors.length < 20) counters.server_errors.push({ sub: s.i, subscription_error: e });
      resolve();
    });
    ch.bind('load', (d) => {
      const now = performance.now();
      // pusher-js has already JSON-parsed the data string.
      if (d && typeof d.s === 'number') record(s, d.s, now - d.t);
      else counters.unknown_frames++;
    });
  });
}

// ------------------------------------------------------------------ reporting

function pct(sorted, n, p) {
  if (n === 0) return null;
  const idx = Math.min(n - 1, Math.max(0, Math.ceil((p / 100) * n) - 1));
  return Math.round(sorted[idx] * 1000) / 1000;
}
function summary(arr, n) {
  if (n === 0) return { count: 0 };
  const a = arr.subarray(0, n).sort();
  let sum = 0;
  for (let i = 0; i < n; i++) sum += a[i];
  return {
    count: n,
    min: Math.round(a[0] * 1000) / 1000,
    p50: pct(a, n, 50),
    p90: pct(a, n, 90),
    p99: pct(a, n, 99),
    p999: pct(a, n, 99.9),
    max: Math.round(a[n - 1] * 1000) / 1000,
    mean: Math.round((sum / n) * 1000) / 1000,
  };
}

const pub = { attempted: 0, accepted: 0, errors: 0, error_samples: [], max_lag_ms: 0, http_ms: new Float64Array(TOTAL), http_n: 0 };
const acceptedPerChannel = new Array(C).fill(0);
const acceptedSeq = Array.from({ length: C }, () => new Uint8Array(perChannelMax));

function report(extra = {}) {
  let expected = 0;
  let delivered = 0;
  for (const s of subs) {
    expected += acceptedPerChannel[s.channel];
    let d = 0;
    const acc = acceptedSeq[s.channel];
    for (let q = 0; q < perChannelMax; q++) if (s.seen[q] && acc[q]) d++;
    delivered += d;
  }
  const connectMs = new Float64Array(subs.filter((s) => s.connectMs != null).map((s) => s.connectMs));
  const subscribeMs = new Float64Array(subs.filter((s) => s.subscribeMs != null).map((s) => s.subscribeMs));
  const lost = expected - delivered;
  const subscribed = subs.filter((s) => s.subscribed).length;
  const ok = subscribed === N && pub.errors === 0 && pub.accepted === TOTAL && lost === 0 && counters.duplicated === 0;
  return {
    ok,
    client: opts.client,
    subscribers: N,
    channels: C,
    rate: R,
    duration_secs: D,
    payload_bytes: opts['payload-bytes'],
    deflate: opts.deflate,
    subscribed,
    published: pub.attempted,
    publish_accepted: pub.accepted,
    publish_errors: pub.errors,
    publish_error_samples: pub.error_samples,
    publish_max_lag_ms: Math.round(pub.max_lag_ms * 10) / 10,
    achieved_rate: pub.elapsedMs ? Math.round((pub.attempted / pub.elapsedMs) * 1000 * 10) / 10 : null,
    expected_deliveries: expected,
    delivered,
    lost,
    duplicated: counters.duplicated,
    out_of_order: counters.out_of_order,
    received_frames: counters.received,
    unknown_frames: counters.unknown_frames,
    latency_ms: summary(latencies, latCount),
    latency_samples_dropped: latDropped,
    publish_http_ms: summary(pub.http_ms, pub.http_n),
    connect_ms: summary(connectMs, connectMs.length),
    subscribe_ms: summary(subscribeMs, subscribeMs.length),
    closes: counters.closes,
    server_errors: counters.server_errors,
    pusher_js: PUSHER_JS_VERSION,
    pusher: PUSHER_LIB_VERSION,
    ms: Date.now() - started,
    ...extra,
  };
}

hardTimeout(timeoutMs, () => ({ ...report(), ok: false, phase }), { unref: true });
process.on('uncaughtException', (e) => finish({ ...report(), ok: false, phase, error: `uncaught: ${e.stack ?? e}` }, 1));
process.on('unhandledRejection', (e) => finish({ ...report(), ok: false, phase, error: `unhandled rejection: ${e?.stack ?? e}` }, 1));

// ------------------------------------------------------------------ run

phase = 'connecting and subscribing';
for (let i = 0; i < N; i++) subs.push(newSub(i));
const connectStart = Date.now();
{
  let next = 0;
  const worker = async () => {
    while (next < N) {
      const s = subs[next++];
      await (opts.client === 'ws' ? rawSubscriber(s) : pusherJsSubscriber(s));
    }
  };
  const subscribeBudget = Math.max(10000, timeoutMs - D * 1000 - opts['drain-ms'] - 10000);
  await Promise.race([Promise.all(Array.from({ length: Math.min(opts['connect-concurrency'], N) }, worker)), sleep(subscribeBudget)]);
}
const subscribed = subs.filter((s) => s.subscribed).length;
log(`${subscribed}/${N} subscribed over ${C} channels in ${Date.now() - connectStart} ms (${opts.client})`);
if (subscribed < N) {
  closeAll();
  finish({ ...report(), ok: false, phase, error: `only ${subscribed} of ${N} subscribers subscribed` }, 1);
}

phase = 'publishing';
const padding = 'x'.repeat(opts['payload-bytes']);
const seqOf = (k) => Math.floor(k / C);
const inflight = new Set();
const pubStart = performance.now();
for (let k = 0; k < TOTAL; ) {
  const now = performance.now();
  const due = pubStart + (k * 1000) / R;
  if (due > now) {
    await sleep(Math.max(1, Math.floor(due - now)));
    continue;
  }
  // Send everything that is due (setTimeout granularity is ~1 ms).
  while (k < TOTAL && pubStart + (k * 1000) / R <= performance.now()) {
    const c = k % C;
    const seq = seqOf(k);
    const t = performance.now();
    pub.max_lag_ms = Math.max(pub.max_lag_ms, t - (pubStart + (k * 1000) / R));
    const data = opts['payload-bytes'] ? `{"s":${seq},"t":${t},"p":"${padding}"}` : `{"s":${seq},"t":${t}}`;
    pub.attempted++;
    const p = lib
      .trigger(channelName(c), 'load', data)
      .then(
        async (res) => {
          await res.text(); // frees the keep-alive socket
          pub.http_ms[pub.http_n++] = performance.now() - t;
          pub.accepted++;
          acceptedPerChannel[c]++;
          acceptedSeq[c][seq] = 1;
        },
        (e) => {
          pub.errors++;
          if (pub.error_samples.length < 5) pub.error_samples.push({ status: e.status ?? null, body: e.body ?? null, error: `${e.message}${e.error ? `: ${e.error.message ?? e.error}` : ''}` });
        },
      )
      .finally(() => inflight.delete(p));
    inflight.add(p);
    k++;
  }
}
pub.elapsedMs = performance.now() - pubStart;
phase = 'waiting for the last HTTP answers';
await Promise.race([Promise.all([...inflight]), sleep(30000)]);

phase = 'draining';
const drainUntil = Date.now() + opts['drain-ms'];
for (;;) {
  let missing = 0;
  for (const s of subs) missing += acceptedPerChannel[s.channel] - s.distinct;
  if (missing <= 0 || Date.now() >= drainUntil) break;
  await sleep(20);
}

function closeAll() {
  for (const s of subs) {
    try {
      if (s.ws) s.ws.terminate();
      if (s.client) s.client.close();
    } catch {}
  }
}
closeAll();
agent.destroy();
const r = report();
finish(r, r.ok ? 0 : 1);
