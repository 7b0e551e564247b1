// Shared helpers of the y-websocket test clients (yjs-*.mjs): argument parsing, the one-line JSON
// result, a hard process timeout, bounded waits, a seeded PRNG and a y-websocket provider wrapper
// that records why a connection closed.
//
// Conventions every script follows:
// - diagnostics go to stderr; stdout carries exactly one line, the JSON result, printed last;
// - every wait is bounded by a deadline, and the whole process by `hardTimeout`, so a script
//   never hangs (it prints a failure result and exits 1 instead).

import { createHash } from 'node:crypto';
import WebSocket from 'ws';
import * as Y from 'yjs';
import { WebsocketProvider } from 'y-websocket';

export { Y, WebSocket, WebsocketProvider };

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A diagnostic line on stderr, tagged with the script name. */
export function makeLog(tag) {
  return (...parts) => process.stderr.write(`[${tag}] ${parts.join(' ')}\n`);
}

/**
 * Parses `--name value` and `--flag` arguments against `spec`, a map from option name to
 * { type: 'string' | 'int' | 'bool', default }. An unknown option, a missing value or a
 * non-integer for an 'int' option throws.
 */
export function parseArgs(argv, spec) {
  const out = {};
  for (const [name, s] of Object.entries(spec)) out[name] = s.default;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (!arg.startsWith('--')) throw new Error(`unexpected argument '${arg}'`);
    let name = arg.slice(2);
    let value;
    const eq = name.indexOf('=');
    if (eq >= 0) {
      value = name.slice(eq + 1);
      name = name.slice(0, eq);
    }
    const s = spec[name];
    if (!s) throw new Error(`unknown option --${name} (known: ${Object.keys(spec).map((k) => `--${k}`).join(' ')})`);
    if (s.type === 'bool') {
      if (value !== undefined) throw new Error(`--${name} takes no value`);
      out[name] = true;
      continue;
    }
    if (value === undefined) {
      if (i + 1 >= argv.length) throw new Error(`--${name} needs a value`);
      value = argv[++i];
    }
    if (s.type === 'int') {
      if (!/^-?\d+$/.test(value)) throw new Error(`--${name} must be an integer, got '${value}'`);
      out[name] = Number.parseInt(value, 10);
    } else {
      out[name] = value;
    }
  }
  return out;
}

/** Splits a comma-separated list; empty items are dropped ('' gives []). */
export function splitList(s) {
  return (s ?? '')
    .split(',')
    .map((x) => x.trim())
    .filter((x) => x.length > 0);
}

/**
 * Prints `result` as the single JSON line on stdout and exits with `code`. Writes to a pipe or a
 * file are synchronous on Linux, so nothing is lost by exiting right after. Only the first call
 * counts (a late hard timeout cannot print a second line).
 */
let finished = false;
export function finish(result, code) {
  if (finished) return;
  finished = true;
  process.stdout.write(`${JSON.stringify(result)}\n`);
  process.exit(code);
}

/**
 * Arms the hard timeout of the process: after `ms` it prints `onTimeout()` (a result object, to
 * which `error` is added) and exits 1. `onTimeout` should describe the phase the script was in.
 */
export function hardTimeout(ms, onTimeout) {
  const timer = setTimeout(() => {
    let result;
    try {
      result = onTimeout();
    } catch (e) {
      result = { error: `timeout handler failed: ${e.message}` };
    }
    finish({ ...result, error: `hard timeout after ${ms} ms${result.error ? `: ${result.error}` : ''}` }, 1);
  }, ms);
  return timer;
}

/**
 * Polls `fn` every `intervalMs` until it returns a truthy value (returned) or `deadline` (a
 * Date.now() value) passes, then throws naming `what` (a string, or a function giving one at
 * that moment). `fn` may throw to abort at once.
 */
export async function waitUntil(fn, deadline, what, intervalMs = 20) {
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() >= deadline) throw new Error(`timed out waiting for ${typeof what === 'function' ? what() : what}`);
    await sleep(Math.min(intervalMs, Math.max(1, deadline - Date.now())));
  }
}

/** mulberry32: a small seeded PRNG; returns floats in [0, 1). */
export function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export const sha256 = (s) => createHash('sha256').update(s, 'utf8').digest('hex');

/**
 * A Y.Doc with a y-websocket provider on `serverUrl` (e.g. ws://127.0.0.1:8080/yjs) and room
 * `room`, connected the way the brief's browser would connect: `ws` as the WebSocket, the token
 * as the `token` URL parameter (none when empty), BroadcastChannel off.
 *
 * The returned object records every close of the connection (`closes`), and `permanent` is set
 * when the server closed with a code in 4400..4499, which y-websocket treats as final (it stops
 * reconnecting); `check()` throws in that case so waits abort at once with a clear message.
 */
export function connectDoc(serverUrl, room, token, { name = 'client', log = () => {} } = {}) {
  const doc = new Y.Doc();
  const text = doc.getText('text');
  const params = token ? { token } : {};
  const provider = new WebsocketProvider(serverUrl, room, doc, {
    WebSocketPolyfill: WebSocket,
    params,
    disableBc: true,
  });
  const c = {
    name,
    doc,
    text,
    provider,
    url: provider.url,
    closes: [],
    errors: 0,
    permanent: null,
    syncs: 0,
    /** Throws when the server ended this connection for good. */
    check() {
      if (c.permanent) {
        throw new Error(`${name}: server closed ${c.url} with code ${c.permanent.code} (${c.permanent.reason || 'no reason'}), y-websocket does not reconnect`);
      }
    },
    /** Waits until the provider has synced (received sync step 2) on its current connection. */
    async waitSynced(deadline) {
      await waitUntil(
        () => {
          c.check();
          return provider.synced;
        },
        deadline,
        () => `${name} to sync with ${c.url} (${c.closes.length} closes so far, the last: ${JSON.stringify(c.closes.slice(-3))}; connection errors: ${c.errors})`,
      );
    },
    destroy() {
      try {
        provider.destroy();
      } catch (e) {
        log(`${name}: provider.destroy failed: ${e.message}`);
      }
      doc.destroy();
    },
  };
  provider.on('connection-close', (event) => {
    // `event` is null when the provider closed the socket itself (disconnect() or its watchdog).
    const entry = event ? { code: event.code, reason: event.reason || '' } : { code: null, reason: 'closed locally' };
    c.closes.push(entry);
    if (event) log(`${name}: connection closed by peer: code ${entry.code} ${entry.reason}`);
  });
  provider.on('connection-error', () => {
    c.errors++;
  });
  provider.on('closed', (event) => {
    c.permanent = { code: event.code, reason: event.reason || '' };
  });
  provider.on('sync', (state) => {
    if (state) c.syncs++;
  });
  return c;
}

/** Byte equality of two Uint8Arrays. */
export function bytesEqual(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
