// Helpers shared by every Node test client of this folder (yjs-*.mjs, pusher-*.mjs): argument
// parsing, the one-line JSON result, a hard process timeout, bounded waits, logging and a few
// small utilities (seeded PRNG, sha256, run nonces, equality, clipping). What is specific to a
// protocol lives in yjs-common.mjs and pusher-common.mjs; the headless-browser harness in
// browser.mjs.
//
// Conventions every script follows:
// - diagnostics go to stderr (`makeLog`); stdout carries exactly one line, the JSON result,
//   printed last (`finish`);
// - every wait is bounded by a deadline (`waitUntil`), and the whole process by `hardTimeout`,
//   so a script never hangs (it prints a failure result and exits 1 instead).

import { createHash } from 'node:crypto';

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A diagnostic line on stderr, tagged with the script name. */
export function makeLog(tag) {
  return (...parts) => process.stderr.write(`[${tag}] ${parts.join(' ')}\n`);
}

// ---------------------------------------------------------------- arguments

/**
 * Parses `--name value`, `--name=value` and `--flag` arguments against `spec`, a map from option
 * name to { type: 'string' | 'int' | 'bool', default }. An unknown option, a missing value or a
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

// ---------------------------------------------------------------- result and timeouts

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
 * With `unref`, the pending timer does not by itself keep the process alive (the pusher-*.mjs
 * scripts arm it so; the yjs-*.mjs scripts do not).
 */
export function hardTimeout(ms, onTimeout, { unref = false } = {}) {
  const timer = setTimeout(() => {
    let result;
    try {
      result = onTimeout();
    } catch (e) {
      result = { error: `timeout handler failed: ${e.message}` };
    }
    finish({ ...result, error: `hard timeout after ${ms} ms${result.error ? `: ${result.error}` : ''}` }, 1);
  }, ms);
  if (unref) timer.unref?.();
  return timer;
}

/**
 * Polls `fn` every `intervalMs` (10 ms unless given) until it returns a truthy value (returned)
 * or `deadline` (a Date.now() value) passes, then throws naming `what` (a string, or a function
 * giving one at that moment). `fn` may throw to abort at once.
 */
export async function waitUntil(fn, deadline, what, intervalMs = 10) {
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() >= deadline) throw new Error(`timed out waiting for ${typeof what === 'function' ? what() : what}`);
    await sleep(Math.min(intervalMs, Math.max(1, deadline - Date.now())));
  }
}

// ---------------------------------------------------------------- small utilities

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

/** Hex SHA-256 of a string (UTF-8). */
export const sha256 = (s) => createHash('sha256').update(s, 'utf8').digest('hex');

/** A short random id (base36), unique enough to keep the channels of concurrent runs apart. */
export function nonce() {
  return `${process.pid.toString(36)}${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
}

/** Byte equality of two Uint8Arrays. */
export function bytesEqual(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Deep equality of JSON values (objects compared by keys, order-insensitive). */
export function jsonEqual(a, b) {
  if (a === b) return true;
  if (typeof a !== typeof b || a === null || b === null || typeof a !== 'object') return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a)) return a.length === b.length && a.every((x, i) => jsonEqual(x, b[i]));
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  return ka.length === kb.length && ka.every((k) => Object.prototype.hasOwnProperty.call(b, k) && jsonEqual(a[k], b[k]));
}

/** Truncates long strings in diagnostics. */
export const clip = (s, n = 300) => (typeof s === 'string' && s.length > n ? `${s.slice(0, n)}…(${s.length} chars)` : s);
