// End-to-end tests of the demo trading dashboard (clients/js/demo) in headless Chromium, against
// the real gateway (target/debug/ringcast) fed by `ringcast-bench demo-feed`.
//
//   (a) ticks of all four symbols arrive over WebSocket; latency p50/p99 are measured and shown;
//   (b) the gateway (Redis broker, history 1000) restarts on the same port: the page reconnects,
//       resumes with recovered:true, and renders every seq of every symbol (no gap, no repeat);
//   (c) with WebSocket refused by a proxy (403 to upgrades), the page falls back to SSE;
//   (d) a screenshot of the live dashboard goes to reports/demo-dashboard.png;
//   (e) with the embedded broker, a restart loses the history: the page reports recovered:false,
//       shows the notice, and goes on live.

import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { chromium } from 'playwright-core';

import {
  CHROMIUM,
  LOG_DIR,
  REPORTS,
  ensureSdkBuilt,
  freePort,
  killAll,
  sleep,
  startFeed,
  startGateway,
  startNoWebSocketProxy,
  startRedis,
  waitFor,
} from './harness.mjs';
import { startStaticServer } from './serve.mjs';

const SYMBOLS = ['BTC-USD', 'ETH-USD', 'SOL-USD', 'EUR-USD'];
const RATE = 20; // ticks per second over all symbols: 5 per symbol
const WAIT = 20000; // the longest single wait
const SCREENSHOT = path.join(REPORTS, 'demo-dashboard.png');
const CHROME_ARGS = [
  '--headless=new',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

const env = {
  static: undefined,
  redis: undefined,
  redisPort: 0,
  gwPort: 0,
  gw: undefined,
  feed: undefined,
  context: undefined,
  userDataDir: undefined,
  proxy: undefined,
  pages: [],
  pageErrors: [],
  notes: [],
};

function note(s) {
  env.notes.push(s);
  console.log(`# ${s}`);
}

function redisGatewayEnv() {
  return {
    RINGCAST_BROKER__KIND: 'redis',
    RINGCAST_BROKER__URL: `redis://127.0.0.1:${env.redisPort}`,
    RINGCAST_BROKER__PREFIX: `rc-e2e-${process.pid}`,
    RINGCAST_ROOMS__HISTORY_SIZE: '1000',
    RINGCAST_NODE_NAME: 'e2e-redis',
  };
}

async function openDashboard(gateway, { transports = 'websocket,sse,poll', name } = {}) {
  const page = await env.context.newPage();
  page.setDefaultTimeout(WAIT);
  const consoleLines = [];
  page.on('console', (m) => {
    consoleLines.push(`${m.type()}: ${m.text()}`);
    if (consoleLines.length > 200) consoleLines.shift();
  });
  page.on('pageerror', (e) => env.pageErrors.push(`${name}: ${e.message}`));
  const url = `${env.static.url}/demo/?gateway=${encodeURIComponent(gateway)}&transports=${transports}`;
  env.pages.push({ page, name, consoleLines });
  await page.goto(url, { waitUntil: 'load', timeout: WAIT });
  try {
    await page.waitForFunction(() => window.ringcastDemo !== undefined, null, { timeout: WAIT });
  } catch (e) {
    throw new Error(`the dashboard did not start (${name}): ${e.message}\n${consoleLines.join('\n')}`);
  }
  return page;
}

/** The page's state as plain data. */
const snap = (page) => page.evaluate(() => JSON.parse(JSON.stringify(window.ringcastDemo)));

/** Every symbol got at least `min` ticks more than in `base` (a snapshot), or than 0. */
function allAdvanced(s, min, base) {
  return SYMBOLS.every((sym) => s.ticks[sym].count >= (base ? base.ticks[sym].count : 0) + min);
}

function assertNoGaps(s, label) {
  for (const sym of SYMBOLS) {
    const t = s.ticks[sym];
    assert.equal(t.gaps, 0, `${label}: ${sym} has ${t.gaps} seq gap(s) (${t.missed} missing)`);
    assert.equal(t.dups, 0, `${label}: ${sym} saw ${t.dups} repeated/out-of-order seq`);
    assert.equal(t.resets, 0, `${label}: ${sym} seq restarted`);
    // Every seq from the first rendered to the last, exactly once.
    assert.equal(t.count, t.seq - t.firstSeq + 1, `${label}: ${sym} count ${t.count} != seq ${t.seq} - first ${t.firstSeq} + 1`);
  }
  assert.equal(s.gapsTotal, 0, `${label}: gapsTotal`);
}

function summary(s) {
  const per = SYMBOLS.map((sym) => `${sym} seq ${s.ticks[sym].firstSeq}…${s.ticks[sym].seq} n=${s.ticks[sym].count} gaps=${s.ticks[sym].gaps}`);
  return `${s.state}/${s.transport} p50=${s.latency.p50}ms p99=${s.latency.p99}ms (n=${s.latency.n}, no-frame ${s.latency.noFrameSkipped}) resumes=${JSON.stringify(s.resumes)} recoveredFalse=${s.recoveredFalse} replayed=${s.replayed} | ${per.join('; ')}`;
}

async function diagnostics() {
  const out = [];
  for (const { page, name, consoleLines } of env.pages) {
    try {
      out.push(`--- page ${name}: ${JSON.stringify(await snap(page))}`);
    } catch (e) {
      out.push(`--- page ${name}: (no state: ${e.message})`);
    }
    out.push(consoleLines.slice(-20).join('\n'));
  }
  for (const p of [env.gw, env.feed, env.redis]) if (p) out.push(p.tail(15));
  out.push(`logs: ${LOG_DIR}`);
  return out.join('\n');
}

/** Runs `fn`; on failure, prints what the pages and processes were doing. */
async function withDiagnostics(fn) {
  try {
    await fn();
  } catch (e) {
    console.log(await diagnostics());
    throw e;
  }
}

before(async () => {
  rmSync(LOG_DIR, { recursive: true, force: true });
  note(`SDK dist: ${ensureSdkBuilt()}`);
  mkdirSync(REPORTS, { recursive: true });
  env.static = await startStaticServer({ port: 0 });
  env.redisPort = await freePort();
  env.redis = await startRedis(env.redisPort);
  env.gwPort = await freePort();
  env.gw = await startGateway({ name: 'gateway-redis', port: env.gwPort, env: redisGatewayEnv() });
  env.feed = startFeed({ name: 'feed-redis', addr: `127.0.0.1:${env.gwPort}`, rate: RATE, symbols: SYMBOLS });
  env.userDataDir = mkdtempSync(path.join(os.tmpdir(), 'ringcast-e2e-chromium-'));
  env.context = await chromium.launchPersistentContext(env.userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROME_ARGS,
    viewport: { width: 1280, height: 760 },
    timeout: WAIT,
  });
  note(`static ${env.static.url}, redis :${env.redisPort}, gateway :${env.gwPort} (pid ${env.gw.pid}), chromium ${env.context.browser()?.version() ?? ''}`);
});

after(async () => {
  try {
    if (env.context) await Promise.race([env.context.close(), sleep(10000)]);
  } catch {
    // closing anyway
  }
  if (env.proxy) await env.proxy.close();
  await killAll();
  if (env.static) await env.static.close();
  if (env.userDataDir) rmSync(env.userDataDir, { recursive: true, force: true });
  if (env.pageErrors.length) console.log(`# page errors:\n${env.pageErrors.join('\n')}`);
});

let main; // the WebSocket dashboard of (a), (b), (d)

test('(a) ticks of all four symbols arrive over WebSocket and latency is shown', async () => {
  await withDiagnostics(async () => {
    main = await openDashboard(`ws://127.0.0.1:${env.gwPort}`, { name: 'main' });
    const s = await waitFor(
      async () => {
        const s = await snap(main);
        return s.state === 'open' && allAdvanced(s, 10) && s.latency.n >= 40 ? s : null;
      },
      { timeoutMs: WAIT, what: '10 ticks per symbol and 40 latency samples' },
    );
    assert.equal(s.transport, 'websocket');
    assert.deepEqual(s.transportsUsed, ['websocket']);
    assertNoGaps(s, '(a)');
    assert.ok(Number.isFinite(s.latency.p50) && s.latency.p50 >= 0, `p50 ${s.latency.p50}`);
    assert.ok(Number.isFinite(s.latency.p99) && s.latency.p99 >= s.latency.p50, `p99 ${s.latency.p99}`);
    // Same host: anything near a second means ticks are stuck somewhere.
    assert.ok(s.latency.p50 < 250, `p50 ${s.latency.p50} ms is too high`);
    assert.ok(s.latency.p99 < 1000, `p99 ${s.latency.p99} ms is too high`);
    // What the page shows, not only what it stores.
    assert.match(await main.textContent('#lat-p50'), /^\d+(\.\d+)? ms$/);
    assert.match(await main.textContent('#lat-p99'), /^\d+(\.\d+)? ms$/);
    assert.equal(await main.textContent('#conn-state'), 'open');
    assert.equal(await main.textContent('#conn-transport'), 'websocket');
    for (const sym of SYMBOLS) {
      const row = main.locator(`tr[data-sym="${sym}"]`);
      const seqText = await row.locator('.seq').textContent();
      assert.ok(/^\d+$/.test(seqText) && Number(seqText) >= s.ticks[sym].seq, `${sym} shows seq ${seqText}`);
      assert.match(await row.locator('.bid').textContent(), /^\d+\.\d+$/);
      const points = await row.locator('polyline').getAttribute('points');
      assert.ok(points && points.split(' ').length >= 10, `${sym} sparkline has ${points} points`);
      assert.equal(await row.locator('.gaps').textContent(), '0');
    }
    assert.equal(await main.isHidden('#notice'), true, 'no notice while nothing went wrong');
    note(`(a) ${summary(s)}`);
  });
});

test('(b) gateway restart on the same port (Redis broker): reconnect, recovered:true, no seq gap', async () => {
  await withDiagnostics(async () => {
    const before = await snap(main);
    assert.equal(before.state, 'open');
    const t0 = Date.now();
    const oldPid = env.gw.pid;
    const exit = await env.gw.stop('SIGTERM', WAIT);
    const tExit = Date.now();
    note(`(b) gateway pid ${oldPid} exited ${JSON.stringify(exit)} ${tExit - t0} ms after SIGTERM`);
    env.gw = await startGateway({ name: 'gateway-redis', port: env.gwPort, env: redisGatewayEnv() });
    const tUp = Date.now();
    note(`(b) gateway restarted on :${env.gwPort} (pid ${env.gw.pid}), ready ${tUp - tExit} ms after the exit`);

    // The page lost its connection, reconnected to the new process and resubscribed every room.
    const resumed = await waitFor(
      async () => {
        const s = await snap(main);
        const answered = s.resumes.recovered + s.resumes.notRecovered;
        return s.state === 'open' && s.disconnects > before.disconnects && answered >= SYMBOLS.length ? s : null;
      },
      { timeoutMs: WAIT, what: 'the page to reconnect and resume its four rooms' },
    );
    const tBack = Date.now();
    note(`(b) page resumed ${tBack - tUp} ms after the gateway was ready (${tBack - t0} ms after SIGTERM)`);
    // Ticks keep coming after the resume. The feed waits out its own 1001 reconnect hint, then
    // sends what it queued: until then the page renders old ticks (replayed or late). Live
    // again = 10 more ticks per symbol since the resume, the last one fresh.
    await waitFor(
      async () => {
        const s = await snap(main);
        return allAdvanced(s, 10, resumed) && SYMBOLS.every((sym) => s.ticks[sym].lastLatency < 500) ? s : null;
      },
      { timeoutMs: WAIT, what: '10 more ticks per symbol after the resume, the last fresh (publish→render < 500 ms)' },
    );
    note(`(b) live again (fresh ticks) ${Date.now() - t0} ms after SIGTERM`);

    // Ticks published while the page was away (or while the feed's publishes waited in its
    // queue) must all be rendered: every seq, in order, once.
    const s1 = await snap(main);
    assert.equal(s1.state, 'open');
    assert.equal(s1.transport, 'websocket');
    assert.equal(s1.recoveredFalse, 0, `recovered:false reported: ${JSON.stringify(s1.recoveryFailures)}`);
    assert.ok(s1.resumes.recovered >= SYMBOLS.length, `every room resumed with recovered:true (${JSON.stringify(s1.resumes)})`);
    assert.equal(s1.resumes.notRecovered, 0);
    assert.equal(s1.sdkGaps, 0, 'the SDK reported no gap');
    assertNoGaps(s1, '(b)');
    for (const sym of SYMBOLS) {
      assert.ok(s1.ticks[sym].seq > before.ticks[sym].seq, `${sym} advanced past the restart`);
    }
    assert.equal(await main.isHidden('#notice'), true, 'no recovered:false notice with the Redis broker');
    const feedErrors = env.feed.lines.filter((l) => /demo-feed: prices\./.test(l.line)).map((l) => l.line);
    if (feedErrors.length) note(`(b) the feed reported ${feedErrors.length} failed publish(es): ${feedErrors.slice(0, 5).join(' | ')}`);
    note(`(b) ${summary(s1)}`);
  });
});

test('(c) WebSocket refused by a proxy: the page falls back to SSE and ticks arrive', async () => {
  await withDiagnostics(async () => {
    env.proxy = await startNoWebSocketProxy(env.gwPort);
    const page = await openDashboard(`ws://127.0.0.1:${env.proxy.port}`, { name: 'sse', transports: 'websocket,sse,poll' });
    const s = await waitFor(
      async () => {
        const s = await snap(page);
        return s.state === 'open' && s.transport === 'sse' && allAdvanced(s, 10) && s.latency.n >= 20 ? s : null;
      },
      { timeoutMs: WAIT, what: 'the page open over SSE with 10 ticks per symbol' },
    );
    assert.ok(env.proxy.stats.refusedUpgrades >= 1, 'the page tried WebSocket first');
    assert.deepEqual(s.transportsUsed, ['sse'], 'never open over WebSocket, did not go down to poll');
    assert.equal(await page.textContent('#conn-transport'), 'sse');
    assert.match(await page.textContent('#lat-p99'), /^\d+(\.\d+)? ms$/);
    assert.ok(s.latency.p50 < 250, `SSE p50 ${s.latency.p50} ms is too high`);
    assert.ok(s.latency.p99 < 1000, `SSE p99 ${s.latency.p99} ms is too high`);
    assertNoGaps(s, '(c)');
    await page.screenshot({ path: path.join(REPORTS, 'demo-dashboard-sse.png') });
    note(`(c) proxy refused ${env.proxy.stats.refusedUpgrades} upgrade(s), forwarded ${env.proxy.stats.forwarded} HTTP connection(s); ${summary(s)}`);
    await page.close();
  });
});

test('(d) screenshot of the live dashboard', async () => {
  await withDiagnostics(async () => {
    await main.bringToFront();
    const before = await snap(main);
    // Live: ticks still flowing on the page that went through the restart, and its latency window
    // has moved past the late ticks of the restart (the feed's queued ticks carry the time they
    // were made): latency is back to normal.
    const s = await waitFor(
      async () => {
        const s = await snap(main);
        return s.state === 'open' && allAdvanced(s, 3, before) && s.latency.p99 < 250 ? s : null;
      },
      { timeoutMs: WAIT, what: 'live ticks and p99 < 250 ms before the screenshot' },
    );
    assertNoGaps(s, '(d)');
    await main.screenshot({ path: SCREENSHOT, fullPage: true });
    const size = statSync(SCREENSHOT).size;
    assert.ok(size > 10000, `screenshot is ${size} bytes`);
    note(`(d) screenshot ${SCREENSHOT} (${size} bytes); ${summary(s)}`);
  });
});

test('(e) embedded broker: a restart loses the history, the page reports recovered:false and goes on', async () => {
  const port = await freePort();
  let gw;
  let feed;
  const gwEnv = { RINGCAST_NODE_NAME: 'e2e-embedded' };
  try {
    await withDiagnostics(async () => {
      gw = await startGateway({ name: 'gateway-embedded', port, env: gwEnv });
      feed = startFeed({ name: 'feed-embedded', addr: `127.0.0.1:${port}`, rate: RATE, symbols: SYMBOLS });
      const page = await openDashboard(`ws://127.0.0.1:${port}`, { name: 'embedded' });
      const before = await waitFor(
        async () => {
          const s = await snap(page);
          return s.state === 'open' && allAdvanced(s, 5) ? s : null;
        },
        { timeoutMs: WAIT, what: 'ticks on the embedded gateway' },
      );
      await gw.stop('SIGTERM', WAIT);
      gw = await startGateway({ name: 'gateway-embedded', port, env: gwEnv });
      // A new process: new epochs, so every room's resume answers recovered:false.
      const resumed = await waitFor(
        async () => {
          const s = await snap(page);
          return s.state === 'open' && s.disconnects > before.disconnects && s.resumes.notRecovered >= SYMBOLS.length ? s : null;
        },
        { timeoutMs: WAIT, what: 'the page to resume its four rooms with recovered:false' },
      );
      const s = await waitFor(
        async () => {
          const s = await snap(page);
          return allAdvanced(s, 5, resumed) ? s : null;
        },
        { timeoutMs: WAIT, what: '5 more ticks per symbol after the resume' },
      );
      assert.equal(s.recoveredFalse, SYMBOLS.length, 'one recovered:false per room');
      assert.equal(s.resumes.recovered, 0);
      assert.equal(await page.isVisible('#notice'), true, 'the recovered:false notice is shown');
      assert.match(await page.textContent('#notice'), /recovered:false/);
      await page.screenshot({ path: path.join(REPORTS, 'demo-dashboard-recovered-false.png') });
      const lost = SYMBOLS.map((sym) => `${sym}: ${s.ticks[sym].missed} missing in ${s.ticks[sym].gaps} gap(s)`).join('; ');
      note(`(e) after the restart: recoveredFalse=${s.recoveredFalse}; ${lost}`);
      note(`(e) ${summary(s)}`);
      await page.close();
    });
  } finally {
    if (feed) await feed.stop('SIGTERM', 5000).catch(() => {});
    if (gw) await gw.stop('SIGTERM', WAIT).catch(() => {});
  }
});

test('no uncaught errors in the pages', () => {
  assert.deepEqual(env.pageErrors, []);
});
