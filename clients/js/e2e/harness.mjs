// Processes and helpers for the demo's end-to-end tests: the gateway, Redis, the demo feed, a TCP
// proxy that refuses WebSocket upgrades. Every wait is bounded; every process is tracked so
// `killAll` can end it (also on exit and on SIGINT/SIGTERM of the test runner).

import { spawn, spawnSync } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const E2E_DIR = path.dirname(fileURLToPath(import.meta.url));
export const CLIENTS_JS = path.resolve(E2E_DIR, '..');
export const REPO = path.resolve(CLIENTS_JS, '..', '..');
export const GATEWAY_BIN = process.env.RINGCAST_BIN ?? path.join(REPO, 'target', 'debug', 'ringcast');
export const BENCH_BIN = process.env.RINGCAST_BENCH_BIN ?? path.join(REPO, 'target', 'debug', 'ringcast-bench');
export const REDIS_BIN = process.env.REDIS_SERVER ?? 'redis-server';
export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
export const REPORTS = path.join(REPO, 'reports');
export const LOG_DIR = path.join(REPORTS, 'demo-e2e-logs');

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `fn` until it returns a truthy value (returned) or `timeoutMs` passes (throws, naming `what`). */
export async function waitFor(fn, { timeoutMs = 20000, intervalMs = 100, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  let lastErr;
  while (Date.now() < deadline) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      lastErr = e;
    }
    await sleep(intervalMs);
  }
  const detail = lastErr ? ` (last error: ${lastErr.message ?? lastErr})` : '';
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${detail}`);
}

/** A port that was free a moment ago on 127.0.0.1. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** The SDK's dist/ must exist and be newer than src/ (the build is `npm run build`, not cargo). */
export function ensureSdkBuilt() {
  const dist = path.join(CLIENTS_JS, 'dist', 'index.js');
  const src = path.join(CLIENTS_JS, 'src');
  const newestSrc = Math.max(...readdirSync(src).map((f) => statSync(path.join(src, f)).mtimeMs));
  if (existsSync(dist)) {
    const distDir = path.join(CLIENTS_JS, 'dist');
    const oldestDist = Math.min(
      ...readdirSync(distDir)
        .filter((f) => f.endsWith('.js'))
        .map((f) => statSync(path.join(distDir, f)).mtimeMs),
    );
    if (oldestDist >= newestSrc) return 'up to date';
  }
  const r = spawnSync('npm', ['run', 'build'], { cwd: CLIENTS_JS, stdio: 'pipe', encoding: 'utf8', timeout: 180000 });
  if (r.status !== 0) throw new Error(`npm run build in clients/js failed:\n${r.stdout}\n${r.stderr}`);
  return 'rebuilt';
}

// ------------------------------------------------------------------ processes

const live = new Set();

function killAllSync() {
  for (const p of live) {
    try {
      p.child.kill('SIGKILL');
    } catch {
      // gone
    }
  }
}
process.on('exit', killAllSync);
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    killAllSync();
    process.exit(130);
  });
}

/** A child process whose output goes to a log file and a ring of recent lines. */
export class Proc {
  constructor(name, cmd, args, { env = {}, cwd = REPO } = {}) {
    mkdirSync(LOG_DIR, { recursive: true });
    this.name = name;
    this.logPath = path.join(LOG_DIR, `${name}.log`);
    this.log = createWriteStream(this.logPath, { flags: 'a' });
    this.log.write(`\n==== ${new Date().toISOString()} ${cmd} ${args.join(' ')}\n`);
    this.lines = [];
    this.lineWaiters = [];
    this.child = spawn(cmd, args, { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    this.exited = new Promise((resolve) => {
      this.child.once('exit', (code, signal) => {
        this.exitInfo = { code, signal };
        live.delete(this);
        this.log.write(`==== exit code=${code} signal=${signal}\n`);
        resolve(this.exitInfo);
      });
    });
    this.child.once('error', (e) => {
      this.spawnError = e;
      this.log.write(`==== spawn error ${e.message}\n`);
    });
    live.add(this);
    for (const [stream, tag] of [
      [this.child.stdout, 'out'],
      [this.child.stderr, 'err'],
    ]) {
      let buf = '';
      stream.setEncoding('utf8');
      stream.on('data', (chunk) => {
        this.log.write(chunk);
        buf += chunk;
        let i;
        while ((i = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          this.onLine(tag, line);
        }
      });
    }
  }

  get pid() {
    return this.child.pid;
  }

  get running() {
    return this.exitInfo === undefined && !this.spawnError;
  }

  onLine(tag, line) {
    // eslint-disable-next-line no-control-regex
    const clean = line.replace(/\x1b\[[0-9;]*m/g, '');
    this.lines.push({ tag, line: clean, at: Date.now() });
    if (this.lines.length > 2000) this.lines.shift();
    for (const w of [...this.lineWaiters]) {
      if (w.re.test(clean)) {
        this.lineWaiters.splice(this.lineWaiters.indexOf(w), 1);
        w.resolve(clean);
      }
    }
  }

  /** Resolves with the first output line (past or future) matching `re`. */
  waitLine(re, timeoutMs = 20000) {
    const seen = this.lines.find((l) => re.test(l.line));
    if (seen) return Promise.resolve(seen.line);
    return new Promise((resolve, reject) => {
      const w = { re, resolve: (l) => (clearTimeout(timer), resolve(l)) };
      const timer = setTimeout(() => {
        const i = this.lineWaiters.indexOf(w);
        if (i >= 0) this.lineWaiters.splice(i, 1);
        reject(new Error(`${this.name}: no line matching ${re} within ${timeoutMs} ms (log: ${this.logPath})`));
      }, timeoutMs);
      this.lineWaiters.push(w);
      this.exited.then((info) => {
        if (this.lineWaiters.includes(w)) {
          clearTimeout(timer);
          this.lineWaiters.splice(this.lineWaiters.indexOf(w), 1);
          reject(new Error(`${this.name} exited (${JSON.stringify(info)}) before printing ${re} (log: ${this.logPath})`));
        }
      });
    });
  }

  /** Sends `signal` and waits up to `timeoutMs` for the exit; SIGKILL after that. */
  async stop(signal = 'SIGTERM', timeoutMs = 20000) {
    if (!this.running) return this.exitInfo;
    this.child.kill(signal);
    const info = await Promise.race([this.exited, sleep(timeoutMs).then(() => undefined)]);
    if (info) return info;
    this.child.kill('SIGKILL');
    await Promise.race([this.exited, sleep(5000)]);
    throw new Error(`${this.name} did not exit within ${timeoutMs} ms of ${signal}; killed`);
  }

  tail(n = 30) {
    return this.lines
      .slice(-n)
      .map((l) => `[${this.name} ${l.tag}] ${l.line}`)
      .join('\n');
  }
}

/** Ends every process still running (SIGTERM, then SIGKILL after 5 s). */
export async function killAll() {
  await Promise.all(
    [...live].map(async (p) => {
      try {
        await p.stop('SIGTERM', 5000);
      } catch {
        // killed
      }
    }),
  );
}

// ------------------------------------------------------------------ the gateway, Redis, the feed

async function httpStatus(url, timeoutMs = 2000) {
  const ctl = new AbortController();
  const t = setTimeout(() => ctl.abort(), timeoutMs);
  try {
    const res = await fetch(url, { signal: ctl.signal });
    await res.text();
    return res.status;
  } catch {
    return 0;
  } finally {
    clearTimeout(t);
  }
}

/**
 * Starts the gateway on 127.0.0.1:`port` with anonymous publish, waits for its listening line and
 * for `/readyz` (with a Redis broker: until its subscription is confirmed).
 */
export async function startGateway({ name, port, env = {} }) {
  if (!existsSync(GATEWAY_BIN)) throw new Error(`gateway binary missing: ${GATEWAY_BIN} (build it with cargo first)`);
  const proc = new Proc(name, GATEWAY_BIN, ['--listen', `127.0.0.1:${port}`, '--admin-listen', '127.0.0.1:0', '--shards', '1', '--no-pin'], {
    env: { RINGCAST_ROOMS__ANONYMOUS: 'publish', NO_COLOR: '1', ...env },
  });
  const line = await proc.waitLine(/ringcast listening public=/, 20000);
  const field = (k) => line.split(/\s+/).find((w) => w.startsWith(`${k}=`))?.slice(k.length + 1);
  proc.public = field('public');
  proc.admin = field('admin');
  if (proc.public !== `127.0.0.1:${port}`) throw new Error(`${name} listens on ${proc.public}, wanted 127.0.0.1:${port}`);
  await waitFor(async () => (await httpStatus(`http://${proc.admin}/readyz`)) === 200, {
    timeoutMs: 20000,
    intervalMs: 200,
    what: `${name} /readyz = 200`,
  });
  return proc;
}

export async function startRedis(port) {
  const proc = new Proc(
    'redis',
    REDIS_BIN,
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no'],
    {},
  );
  await proc.waitLine(/Ready to accept connections/, 20000);
  return proc;
}

export function startFeed({ name, addr, rate = 20, symbols }) {
  if (!existsSync(BENCH_BIN)) throw new Error(`ringcast-bench binary missing: ${BENCH_BIN}`);
  return new Proc(name, BENCH_BIN, ['demo-feed', '--addr', addr, '--rate', String(rate), '--symbols', symbols.join(',')], {
    env: { NO_COLOR: '1' },
  });
}

// ------------------------------------------------------------------ a proxy that refuses WebSocket

/**
 * A TCP proxy on 127.0.0.1 that answers `403` to any request with `Upgrade: websocket` and
 * forwards every other connection byte for byte to `target` (host:port): what a corporate proxy
 * without WebSocket support looks like to a browser.
 */
export function startNoWebSocketProxy(targetPort) {
  const sockets = new Set();
  const stats = { refusedUpgrades: 0, forwarded: 0 };
  const server = net.createServer((client) => {
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    client.on('error', () => client.destroy());
    let head = Buffer.alloc(0);
    const onData = (chunk) => {
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) {
        if (head.length > 65536) client.destroy();
        return;
      }
      client.off('data', onData);
      client.pause();
      const headers = head.subarray(0, end).toString('latin1');
      if (/^upgrade:\s*websocket\s*$/im.test(headers)) {
        stats.refusedUpgrades++;
        const body = 'websocket not allowed by this proxy\n';
        client.end(
          `HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`,
        );
        return;
      }
      stats.forwarded++;
      const upstream = net.connect(targetPort, '127.0.0.1');
      sockets.add(upstream);
      upstream.on('close', () => {
        sockets.delete(upstream);
        client.destroy();
      });
      upstream.on('error', () => upstream.destroy());
      client.on('close', () => upstream.destroy());
      upstream.write(head);
      client.pipe(upstream);
      upstream.pipe(client);
      client.resume();
    };
    client.on('data', onData);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      resolve({
        port: server.address().port,
        stats,
        close: () =>
          new Promise((r) => {
            for (const s of sockets) s.destroy();
            server.close(() => r());
          }),
      });
    });
  });
}
