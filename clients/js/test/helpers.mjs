// Test helpers: start the real ringcast binary, a TCP proxy that can drop, freeze or refuse
// connections, and small bounded waiting utilities. Every wait has a deadline.
import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import { RingcastClient } from '../dist/index.js';

const here = dirname(fileURLToPath(import.meta.url));
export const BINARY = process.env.RINGCAST_BIN ?? resolve(here, '../../../target/debug/ringcast');

/**
 * Starts the gateway. `port` 0 picks a free one. `toml` is written to a config file; `env` adds
 * variables (anonymous clients may publish unless overridden).
 */
export async function startGateway({ port = 0, env = {}, toml = '' } = {}) {
  if (!existsSync(BINARY)) {
    throw new Error(`gateway binary not found at ${BINARY} (build it with cargo build -p gateway)`);
  }
  const args = ['--listen', `127.0.0.1:${port}`, '--admin-listen', '127.0.0.1:0', '--shards', '2', '--no-pin', '--log-level', 'error'];
  if (toml) {
    const dir = mkdtempSync(join(tmpdir(), 'ringcast-js-'));
    const file = join(dir, 'ringcast.toml');
    writeFileSync(file, toml);
    args.push('--config', file);
  }
  const proc = spawn(BINARY, args, {
    env: { ...process.env, RINGCAST_ROOMS__ANONYMOUS: 'publish', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  proc.stderr.on('data', (d) => {
    stderr += d.toString();
  });
  const exited = new Promise((res) => proc.once('exit', (code, signal) => res({ code, signal })));
  const line = await new Promise((res, rej) => {
    let buf = '';
    const timer = setTimeout(() => rej(new Error(`gateway did not print its listening line in 15 s; stderr: ${stderr}`)), 15000);
    proc.stdout.on('data', (d) => {
      buf += d.toString();
      const nl = buf.indexOf('\n');
      if (nl >= 0) {
        clearTimeout(timer);
        res(buf.slice(0, nl));
      }
    });
    proc.once('exit', (code) => {
      clearTimeout(timer);
      rej(new Error(`gateway exited (${code}) before listening; stderr: ${stderr}`));
    });
  });
  const m = /public=(\S+) tls=(\S+) admin=(\S+) shards=(\d+) driver=(\S+)/.exec(line);
  if (!m) throw new Error(`unexpected listening line: ${line}`);
  const pub = m[1];
  return {
    proc,
    line,
    public: pub,
    port: Number(pub.split(':').pop()),
    admin: m[3],
    url: `ws://${pub}`,
    http: `http://${pub}`,
    exited,
    stderr: () => stderr,
    /** Sends a signal and waits (bounded) for the exit. */
    async stop(signal = 'SIGKILL', timeoutMs = 8000) {
      if (proc.exitCode !== null || proc.signalCode !== null) return exited;
      proc.kill(signal);
      let timer;
      const t = await Promise.race([exited, new Promise((r) => (timer = setTimeout(() => r(null), timeoutMs)))]);
      clearTimeout(timer);
      if (t === null) {
        proc.kill('SIGKILL');
        return exited;
      }
      return t;
    },
  };
}

/** A free TCP port on loopback (bound, read, released). */
export function freePort() {
  return new Promise((res, rej) => {
    const s = net.createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `cond` every 10 ms until it is truthy; throws after `timeoutMs`. */
export async function waitFor(cond, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
}

/** `ws` without permessage-deflate (browsers always offer it, and `ws` does by default). */
export class WebSocketNoDeflate extends WebSocket {
  constructor(url, protocols) {
    super(url, protocols, { perMessageDeflate: false });
  }
}

/** A client with Node's `ws` WebSocket and test-friendly timings. */
export function makeClient(url, options = {}) {
  return new RingcastClient({
    url,
    WebSocket,
    backoff: { minMs: 20, maxMs: 200, resetAfterMs: 2000 },
    connectTimeoutMs: 3000,
    ...options,
  });
}

/** Subscribes and records messages; `offsets()` lists what the handler saw. */
export function recorder(client, room, options = {}) {
  const msgs = [];
  const sub = client.subscribe(room, (data, ctx) => msgs.push({ data, ...ctx }), options);
  return { sub, msgs, offsets: () => msgs.map((m) => m.offset) };
}

export const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/** Bytes that differ per `n` and include 0x00 and 0xff. */
export const bytes = (n) => Uint8Array.of(0x00, 0xff, n & 0xff, 0x00, 0x80, 0xff);

/** Bytes as hex, to compare payloads with deepEqual. */
export const hex = (b) => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');

/**
 * Messages (recorded, or history items) as `{offset, data}` for JSON and `{offset, bin: hex}` for
 * binary ones; a binary message must have `data === null`.
 */
export function shape(msgs) {
  return msgs.map((m) => {
    if (m.binary === undefined) return { offset: m.offset, data: m.data };
    if (!(m.binary instanceof Uint8Array) || m.data !== null) return { offset: m.offset, bad: m };
    return { offset: m.offset, bin: hex(m.binary) };
  });
}

/** What `mixed(n)` publishes at offset n: odd offsets binary `bytes(n)`, even ones `{n}`. */
export const mixedShape = (n) => (n % 2 ? { offset: n, bin: hex(bytes(n)) } : { offset: n, data: { n } });

/** Publishes message `n` of a mixed room (see mixedShape) with `client` (WebSocket). */
export const mixed = (client, room, n) => (n % 2 ? client.publishBinary(room, bytes(n)) : client.publish(room, { n }));

/** An HS256 JWT. */
export function jwt(claims, secret) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const head = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
  const sig = createHmac('sha256', secret).update(head).digest('base64url');
  return `${head}.${sig}`;
}

/**
 * A TCP proxy in front of the gateway. `refusePaths`: requests whose path starts with one of
 * these are answered 403 (a proxy that blocks WebSocket, say). `dropAll()` resets every
 * connection; `block(true)` refuses new ones; `freeze()` silently stops forwarding on the
 * current connections (a dead link) while new ones work.
 */
export async function startProxy(targetPort, { refusePaths = [] } = {}) {
  const pairs = new Set();
  let blocked = false;
  const refused = [];
  const server = net.createServer((client) => {
    if (blocked) {
      client.destroy();
      return;
    }
    const pair = { client, upstream: undefined, frozen: false };
    pairs.add(pair);
    client.on('error', () => {});
    client.on('close', () => {
      pair.upstream?.destroy();
      pairs.delete(pair);
    });
    client.once('data', (first) => {
      const requestLine = first.toString('latin1', 0, Math.min(first.length, 300)).split('\r\n')[0];
      const path = requestLine.split(' ')[1] ?? '';
      if (refusePaths.some((p) => path.startsWith(p))) {
        refused.push(path);
        client.end('HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 7\r\nConnection: close\r\n\r\nblocked');
        return;
      }
      const upstream = net.connect(targetPort, '127.0.0.1');
      pair.upstream = upstream;
      upstream.on('error', () => {});
      upstream.on('close', () => client.destroy());
      upstream.on('data', (d) => {
        if (!pair.frozen) client.write(d);
      });
      client.on('data', (d) => {
        if (!pair.frozen) upstream.write(d);
      });
      upstream.write(first);
    });
  });
  await new Promise((res) => server.listen(0, '127.0.0.1', res));
  const port = server.address().port;
  return {
    port,
    url: `ws://127.0.0.1:${port}`,
    http: `http://127.0.0.1:${port}`,
    refused,
    connections: () => pairs.size,
    dropAll() {
      for (const p of pairs) {
        p.client.resetAndDestroy?.() ?? p.client.destroy();
        p.upstream?.destroy();
      }
      pairs.clear();
    },
    block(on) {
      blocked = on;
    },
    freeze() {
      for (const p of pairs) p.frozen = true;
    },
    close() {
      this.dropAll();
      return new Promise((res) => server.close(() => res()));
    },
  };
}
