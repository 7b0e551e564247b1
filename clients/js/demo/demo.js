// ringcast demo trading dashboard: live ticks of prices.<SYMBOL> rooms through the TypeScript SDK.
//
// Query string:
//   gateway     the gateway's address (ws://, wss://, http:// or https://); default ws://<this host>:8080
//   transports  comma-separated, in order of preference; default websocket,sse,poll
//   symbols     comma-separated; default BTC-USD,ETH-USD,SOL-USD,EUR-USD
//   window      how many live ticks the latency percentiles cover; default 200
//
// Everything the page shows is also on `window.ringcastDemo` (plain data, for tests).

import { RingcastClient } from '../dist/index.js';

const DEFAULT_SYMBOLS = ['BTC-USD', 'ETH-USD', 'SOL-USD', 'EUR-USD'];
const SPARK_POINTS = 60;
const LOG_MAX = 60;

const params = new URLSearchParams(location.search);
const gateway = params.get('gateway') || `ws://${location.hostname || '127.0.0.1'}:8080`;
const transports = listParam('transports', ['websocket', 'sse', 'poll']);
const symbols = listParam('symbols', DEFAULT_SYMBOLS);
const latencyWindow = clampInt(params.get('window'), 200, 10, 10000);

function listParam(name, fallback) {
  const v = params.get(name);
  if (!v) return fallback;
  const list = v.split(',').map((s) => s.trim()).filter(Boolean);
  return list.length ? list : fallback;
}

function clampInt(v, dflt, min, max) {
  const n = Number.parseInt(v ?? '', 10);
  return Number.isFinite(n) ? Math.min(max, Math.max(min, n)) : dflt;
}

/** Wall-clock now in ms with sub-millisecond precision (the feed's `t` is Unix ms). */
function nowMs() {
  return performance.timeOrigin + performance.now();
}

// ------------------------------------------------------------------ state (window.ringcastDemo)

const demo = {
  gateway,
  transports,
  symbols,
  state: 'idle',
  transport: null,
  clientId: null,
  /** Every transport that was open, in order (`websocket`, then `sse` after a fallback, …). */
  transportsUsed: [],
  /**
   * sym → { seq, firstSeq, count, gaps, missed, dups, resets, bid, ask, lastT, lastLatency, epoch,
   * offset }. `gaps`: jumps in `seq` (`missed` ticks in all); `lastLatency`: publish→render of the
   * last rendered tick (replayed or not).
   */
  ticks: {},
  /**
   * Over the last `window` live ticks, in ms. Replayed ticks are left out (they were published
   * while we were away), and so are ticks the fallback timer put in the DOM because no animation
   * frame came (hidden page, or the browser not producing frames): nothing was rendered then, so
   * there is no render time to measure. `noFrameSkipped` counts them.
   */
  latency: { p50: null, p99: null, max: null, n: 0, window: latencyWindow, noFrameSkipped: 0 },
  /** Total of `gaps` over all symbols. */
  gapsTotal: 0,
  /** Resumes the server answered `recovered: false` (messages missed: the SDK's `recoveryFailed`). */
  recoveredFalse: 0,
  recoveryFailures: [],
  /** Resumes after a reconnect, by outcome. */
  resumes: { recovered: 0, notRecovered: 0 },
  /** Ticks delivered as the replay of a resume (published while we were away). */
  replayed: 0,
  /** `gap` events from the SDK (server `gap` notices or offset jumps it saw). */
  sdkGaps: 0,
  disconnects: 0,
  errors: [],
  /** Ticks rendered so far (all symbols). */
  rendered: 0,
  /** DOM updates, and how many of them the fallback timer did (no animation frame within 250 ms). */
  frames: 0,
  framesByTimer: 0,
  startedAt: Date.now(),
};
for (const sym of symbols) {
  demo.ticks[sym] = {
    seq: null,
    firstSeq: null,
    count: 0,
    gaps: 0,
    missed: 0,
    dups: 0,
    resets: 0,
    bid: null,
    ask: null,
    lastT: null,
    lastLatency: null,
    epoch: null,
    offset: null,
  };
}
window.ringcastDemo = demo;

// Per symbol, not exposed: price series for the sparkline and the first mid (for "change").
const series = new Map(symbols.map((s) => [s, { mids: [], firstMid: null, prevMid: null }]));
/** room → { epoch, offset }: messages up to this offset are the replay of a resume. */
const replayUntil = new Map();
const latencies = []; // ring of the last `latencyWindow` live latencies
let latIdx = 0;

// ------------------------------------------------------------------ DOM

const $ = (id) => document.getElementById(id);
const rows = new Map();

function buildTable() {
  const body = $('ticker-body');
  for (const sym of symbols) {
    const tr = document.createElement('tr');
    tr.dataset.sym = sym;
    tr.innerHTML = `
      <td class="sym"></td>
      <td class="num bid">–</td>
      <td class="num ask">–</td>
      <td class="num change">–</td>
      <td class="spark"><svg class="sparkline" width="180" height="32" viewBox="0 0 180 32" preserveAspectRatio="none"><polyline points=""/></svg></td>
      <td class="num seq">–</td>
      <td class="num count">0</td>
      <td class="num gaps">0</td>`;
    tr.querySelector('.sym').textContent = sym;
    body.appendChild(tr);
    rows.set(sym, {
      tr,
      bid: tr.querySelector('.bid'),
      ask: tr.querySelector('.ask'),
      change: tr.querySelector('.change'),
      line: tr.querySelector('polyline'),
      seq: tr.querySelector('.seq'),
      count: tr.querySelector('.count'),
      gaps: tr.querySelector('.gaps'),
    });
  }
  $('conn-gateway').textContent = `${gateway} · ${transports.join(',')}`;
  $('lat-window').textContent = String(latencyWindow);
}

function fmtPrice(v) {
  if (typeof v !== 'number' || !Number.isFinite(v)) return '–';
  return v < 10 ? v.toFixed(5) : v.toFixed(2);
}

function fmtMs(v) {
  if (v === null || !Number.isFinite(v)) return '–';
  return v < 10 ? `${v.toFixed(2)} ms` : v < 100 ? `${v.toFixed(1)} ms` : `${Math.round(v)} ms`;
}

function renderRow(sym) {
  const r = rows.get(sym);
  const t = demo.ticks[sym];
  const s = series.get(sym);
  if (!r || !t || !s) return;
  r.bid.textContent = fmtPrice(t.bid);
  r.ask.textContent = fmtPrice(t.ask);
  const mid = s.mids[s.mids.length - 1];
  if (mid !== undefined && s.firstMid) {
    const pct = ((mid - s.firstMid) / s.firstMid) * 100;
    r.change.textContent = `${pct >= 0 ? '+' : ''}${pct.toFixed(3)}%`;
    r.change.className = `num change ${pct > 0 ? 'up' : pct < 0 ? 'down' : ''}`;
  }
  const dir = s.prevMid === null || mid === s.prevMid ? '' : mid > s.prevMid ? 'flash-up' : 'flash-down';
  r.bid.className = `num bid ${dir}`;
  r.ask.className = `num ask ${dir}`;
  r.seq.textContent = t.seq === null ? '–' : String(t.seq);
  r.count.textContent = String(t.count);
  r.gaps.textContent = String(t.gaps);
  r.gaps.className = `num gaps ${t.gaps > 0 ? 'bad' : ''}`;
  r.line.setAttribute('points', sparkPoints(s.mids));
  const rising = s.mids.length > 1 && s.mids[s.mids.length - 1] >= s.mids[0];
  r.line.setAttribute('stroke', rising ? 'var(--up)' : 'var(--down)');
}

function sparkPoints(mids) {
  if (mids.length === 0) return '';
  let lo = Infinity;
  let hi = -Infinity;
  for (const m of mids) {
    if (m < lo) lo = m;
    if (m > hi) hi = m;
  }
  const span = hi - lo || 1;
  const dx = 180 / Math.max(1, SPARK_POINTS - 1);
  const x0 = 180 - dx * (mids.length - 1);
  return mids.map((m, i) => `${(x0 + i * dx).toFixed(1)},${(30 - ((m - lo) / span) * 28).toFixed(1)}`).join(' ');
}

function renderConn() {
  $('conn-state').textContent = demo.state;
  $('conn-dot').dataset.state = demo.state;
  $('conn-transport').textContent = demo.transport ?? '–';
}

function renderStats() {
  $('lat-p50').textContent = fmtMs(demo.latency.p50);
  $('lat-p99').textContent = fmtMs(demo.latency.p99);
  $('lat-n').textContent = String(demo.latency.n);
  $('gaps-total').textContent = String(demo.gapsTotal);
  $('gaps-total').className = `value ${demo.gapsTotal > 0 ? 'bad' : ''}`;
  $('resumes').textContent = `${demo.resumes.recovered} / ${demo.resumes.notRecovered}`;
  $('replayed').textContent = String(demo.replayed);
}

function renderNotice() {
  const el = $('notice');
  if (demo.recoveredFalse === 0 && demo.errors.length === 0) {
    el.hidden = true;
    return;
  }
  const parts = [];
  if (demo.recoveredFalse > 0) {
    const last = demo.recoveryFailures[demo.recoveryFailures.length - 1];
    parts.push(
      `recovered:false reported ${demo.recoveredFalse}× (last: ${last.room} at ${new Date(last.at).toLocaleTimeString()}): ` +
        'the gateway no longer had the ticks published while this page was disconnected ' +
        '(history lost, e.g. a restart with the embedded broker). Prices are live again, but ticks in between are missing.',
    );
  }
  if (demo.errors.length > 0) {
    const e = demo.errors[demo.errors.length - 1];
    parts.push(`error ${e.code}: ${e.reason ?? ''}`);
  }
  el.textContent = parts.join(' · ');
  el.hidden = false;
}

function log(text, warn = false) {
  const ol = $('log');
  const li = document.createElement('li');
  li.textContent = `${new Date().toLocaleTimeString()} ${text}`;
  if (warn) li.className = 'warn';
  ol.insertBefore(li, ol.firstChild);
  while (ol.childElementCount > LOG_MAX) ol.removeChild(ol.lastChild);
}

// ------------------------------------------------------------------ frames: DOM update, then latency

const dirty = new Set();
let pending = []; // { t, replayed } of ticks waiting for their frame
let scheduled = false;
let fallbackTimer;

function schedule() {
  if (scheduled) return;
  scheduled = true;
  requestAnimationFrame(() => frame(false));
  // A hidden page gets no animation frames: render anyway, later.
  fallbackTimer = setTimeout(() => frame(true), 250);
}

function frame(byTimer) {
  if (!scheduled) return;
  if (byTimer) demo.framesByTimer++;
  scheduled = false;
  clearTimeout(fallbackTimer);
  for (const sym of dirty) renderRow(sym);
  dirty.clear();
  // Render time: right after this frame's DOM update.
  const now = nowMs();
  const noFrame = byTimer || document.visibilityState === 'hidden';
  for (const p of pending) {
    demo.rendered++;
    if (typeof p.t !== 'number') continue;
    const lat = now - p.t;
    const t = demo.ticks[p.sym];
    if (t && t.seq === p.seq) t.lastLatency = round2(lat);
    if (p.replayed) continue;
    if (noFrame) {
      demo.latency.noFrameSkipped++;
      continue;
    }
    if (latencies.length < latencyWindow) latencies.push(lat);
    else latencies[latIdx] = lat;
    latIdx = (latIdx + 1) % latencyWindow;
  }
  pending = [];
  updateLatency();
  demo.frames++;
  renderStats();
}

function updateLatency() {
  const n = latencies.length;
  demo.latency.n = n;
  if (n === 0) return;
  const sorted = [...latencies].sort((a, b) => a - b);
  const pick = (q) => sorted[Math.min(n - 1, Math.max(0, Math.ceil(q * n) - 1))];
  demo.latency.p50 = round2(pick(0.5));
  demo.latency.p99 = round2(pick(0.99));
  demo.latency.max = round2(sorted[n - 1]);
}

function round2(v) {
  return Math.round(v * 100) / 100;
}

// ------------------------------------------------------------------ ticks

function onTick(sym, data, ctx) {
  const t = demo.ticks[sym];
  const s = series.get(sym);
  if (!t || !s || !data || typeof data !== 'object' || typeof data.seq !== 'number') return;
  const until = replayUntil.get(ctx.room);
  const replayed = until !== undefined && until.epoch === ctx.epoch && ctx.offset <= until.offset;
  if (until !== undefined && !replayed) replayUntil.delete(ctx.room);
  if (replayed) demo.replayed++;

  if (t.seq === null) {
    t.firstSeq = data.seq;
  } else if (data.seq === t.seq + 1) {
    // in order
  } else if (data.seq > t.seq + 1) {
    t.gaps++;
    t.missed += data.seq - t.seq - 1;
    demo.gapsTotal++;
    log(`${sym}: seq gap ${t.seq + 1}…${data.seq - 1} (${data.seq - t.seq - 1} missing)`, true);
  } else if (data.seq === 1) {
    t.resets++;
    t.firstSeq = 1;
    log(`${sym}: seq restarted at 1 (the feed restarted)`);
  } else {
    t.dups++;
    log(`${sym}: seq ${data.seq} again or out of order (last ${t.seq})`, true);
  }
  t.seq = data.seq;
  t.count++;
  t.bid = data.bid;
  t.ask = data.ask;
  t.lastT = data.t;
  t.epoch = ctx.epoch;
  t.offset = ctx.offset;

  if (typeof data.bid === 'number' && typeof data.ask === 'number') {
    const mid = (data.bid + data.ask) / 2;
    s.prevMid = s.mids.length ? s.mids[s.mids.length - 1] : null;
    if (s.firstMid === null) s.firstMid = mid;
    s.mids.push(mid);
    if (s.mids.length > SPARK_POINTS) s.mids.shift();
  }
  pending.push({ sym, seq: data.seq, t: data.t, replayed });
  dirty.add(sym);
  schedule();
}

// ------------------------------------------------------------------ connection

function start() {
  buildTable();
  renderConn();
  renderStats();
  let client;
  try {
    client = new RingcastClient({ url: gateway, transports });
  } catch (e) {
    demo.errors.push({ code: 'bad_config', reason: String(e && e.message ? e.message : e) });
    renderNotice();
    return;
  }
  window.ringcastDemoClient = client;

  client.onState((state, prev) => {
    demo.state = state;
    demo.transport = client.transport ?? null;
    renderConn();
    log(`state ${prev} → ${state}`);
  });
  client.on('open', ({ transport, client: id }) => {
    demo.transport = transport;
    demo.clientId = id ?? null;
    demo.transportsUsed.push(transport);
    renderConn();
    log(`open over ${transport}${id ? ` as ${id}` : ''}`);
  });
  client.on('disconnected', (info) => {
    demo.disconnects++;
    const why = [
      info.code !== undefined ? `code ${info.code}` : '',
      info.status !== undefined ? `HTTP ${info.status}` : '',
      info.reason ?? '',
    ]
      .filter(Boolean)
      .join(', ');
    const retry = info.retryInMs !== undefined ? `, retry in ${info.retryInMs} ms` : '';
    log(`${info.transport} ${info.wasOpen ? 'lost' : 'could not connect'}${why ? ` (${why})` : ''}${retry}`, info.wasOpen);
  });
  client.on('recoveryFailed', (info) => {
    demo.recoveredFalse++;
    demo.recoveryFailures.push({
      room: info.room,
      previous: info.previous,
      epoch: info.epoch,
      offset: info.offset,
      at: Date.now(),
    });
    log(`${info.room}: recovered:false (was at ${info.previous.epoch}:${info.previous.offset}, now ${info.epoch}:${info.offset})`, true);
    renderNotice();
  });
  client.on('gap', (info) => {
    demo.sdkGaps++;
    log(`${info.room}: offsets ${info.from}…${info.to} skipped (${info.source})`, true);
  });
  client.on('error', (err) => {
    demo.errors.push({ code: err.code, reason: err.reason ?? err.message, room: err.room });
    if (demo.errors.length > 50) demo.errors.shift();
    log(`error ${err.code}${err.room ? ` in ${err.room}` : ''}: ${err.reason ?? err.message}`, true);
    renderNotice();
  });

  for (const sym of symbols) {
    const room = `prices.${sym}`;
    client.subscribe(room, (data, ctx) => onTick(sym, data, ctx), {
      onSubscribed: (info) => {
        if (!info.resumed) {
          log(`${room}: subscribed at ${info.epoch}:${info.offset}`);
          return;
        }
        if (info.recovered) {
          demo.resumes.recovered++;
          replayUntil.set(room, { epoch: info.epoch, offset: info.offset });
          log(`${room}: resumed, recovered (up to offset ${info.offset})`);
        } else {
          demo.resumes.notRecovered++;
          replayUntil.delete(room);
        }
        renderStats();
      },
      onError: (err) => log(`${room}: ${err.code} ${err.reason ?? ''}`, true),
    });
  }
  void client.connect();
  log(`connecting to ${gateway} (${transports.join(', ')})`);
}

start();
