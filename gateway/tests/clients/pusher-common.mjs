// Shared helpers of the Pusher Channels test clients (pusher-*.mjs): argument parsing, the one-line
// JSON result, a hard process timeout, bounded waits, and wrappers around the unmodified npm
// packages `pusher-js` (the client, Node build) and `pusher` (the server/HTTP API library).
//
// Conventions every script follows (the same as the yjs-*.mjs scripts):
// - diagnostics go to stderr; stdout carries exactly one line, the JSON result, printed last;
// - every wait is bounded by a deadline, and the whole process by `hardTimeout`, so a script
//   never hangs (it prints a failure result and exits 1 instead).
//
// How the clients are configured (what an application does against a self-hosted server):
//   new Pusher(key, { cluster: 'mt1', wsHost: host, wsPort: port, forceTLS: false,
//                     enabledTransports: ['ws'], channelAuthorization: { customHandler },
//                     userAuthentication: { customHandler }, nacl })
//   -> ws://HOST:PORT/app/KEY?protocol=7&client=js&version=8.6.0&flash=false
//   new PusherServer({ appId, key, secret, host, port, useTLS: false })
//   -> http://HOST:PORT/apps/APP_ID/events?auth_key=...&auth_timestamp=...&auth_version=1.0&body_md5=...&auth_signature=...

import Pusher from 'pusher-js'; // Node build (dist/node/pusher.js, CommonJS; default import works in ESM)
import PusherServer from 'pusher';
import nacl from 'tweetnacl';
import { createRequire } from 'node:module';

export { Pusher, PusherServer, nacl };

const require = createRequire(import.meta.url);
/** The installed versions of the two libraries (reported in every result). */
export const PUSHER_JS_VERSION = require('pusher-js/package.json').version;
export const PUSHER_LIB_VERSION = require('pusher/package.json').version;

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
 * Prints `result` as the single JSON line on stdout and exits with `code`. Only the first call
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
 * which `error` is added) and exits 1.
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
  timer.unref?.();
  return timer;
}

/**
 * Polls `fn` every `intervalMs` until it returns a truthy value (returned) or `deadline` (a
 * Date.now() value) passes, then throws naming `what` (a string, or a function giving one).
 * `fn` may throw to abort at once.
 */
export async function waitUntil(fn, deadline, what, intervalMs = 10) {
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() >= deadline) throw new Error(`timed out waiting for ${typeof what === 'function' ? what() : what}`);
    await sleep(Math.min(intervalMs, Math.max(1, deadline - Date.now())));
  }
}

/** A short random id (base36), unique enough to keep the channels of concurrent runs apart. */
export function nonce() {
  return `${process.pid.toString(36)}${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
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

// pusher-js logs through Pusher.log when it is set (never to the console then). The last lines are
// kept for failure reports; with `verbose` they also go to stderr.
const pusherLogLines = [];
export function capturePusherJsLog({ verbose = false, log = () => {} } = {}) {
  Pusher.log = (msg) => {
    const line = typeof msg === 'string' ? msg : JSON.stringify(msg);
    pusherLogLines.push(line);
    if (pusherLogLines.length > 200) pusherLogLines.shift();
    if (verbose) log(`pusher-js: ${clip(line, 600)}`);
  };
}
export const pusherJsLogTail = (n = 20) => pusherLogLines.slice(-n).map((l) => clip(l, 400));

/** The `pusher` server library (HTTP API + signing) for the server under test. */
export function makeServerLib({ host, port, appId, key, secret, encryptionMasterKeyBase64, timeout = 10000, agent }) {
  const opts = { appId: String(appId), key, secret, host, port: Number(port), useTLS: false, timeout };
  if (agent) opts.agent = agent;
  if (encryptionMasterKeyBase64) opts.encryptionMasterKeyBase64 = encryptionMasterKeyBase64;
  return new PusherServer(opts);
}

/** Calls the HTTP API through the server lib and returns {status, body (parsed JSON or text), raw}. */
export async function apiCall(promise) {
  try {
    const res = await promise;
    const raw = await res.text();
    let body = raw;
    try {
      body = JSON.parse(raw);
    } catch {}
    return { status: res.status, body, raw };
  } catch (e) {
    if (e && e.status !== undefined) {
      let body = e.body;
      try {
        body = JSON.parse(e.body);
      } catch {}
      return { status: e.status, body, raw: e.body, error: e.message };
    }
    return { status: null, body: null, error: `${e?.message ?? e}${e?.error ? `: ${e.error.message ?? e.error}` : ''}` };
  }
}

/**
 * A pusher-js client, connected the way an application on a self-hosted server connects, with
 * authorization through customHandlers that sign with the `pusher` server lib (`authLib`, which
 * may have a wrong secret to produce bad signatures).
 *
 * Options: presence ({user_id, user_info}) for presence channels; userData ({id, user_info})
 * for signin(); tamper(authObject, kind) to change what the handlers return; activityTimeout /
 * pongTimeout passed to pusher-js.
 *
 * The returned object records every decoded frame the client receives (`frames`, as pusher-js
 * decodes them: data JSON-parsed when it was a JSON string; with `user_id` when present), every
 * event pusher-js sends through send_event (`sent`), connection errors and state changes.
 */
export function makeClient({
  host,
  port,
  key,
  authLib,
  name = 'client',
  presence = null,
  userData = null,
  tamper = null,
  activityTimeout,
  pongTimeout,
  log = () => {},
}) {
  const c = {
    name,
    frames: [],
    sent: [],
    errors: [],
    states: [],
    authCalls: [],
  };
  const channelAuthorization = {
    customHandler: (params, callback) => {
      try {
        let auth;
        if (params.channelName.startsWith('presence-')) {
          auth = authLib.authorizeChannel(params.socketId, params.channelName, presence ?? { user_id: `${name}-user`, user_info: { name } });
        } else {
          auth = authLib.authorizeChannel(params.socketId, params.channelName);
        }
        if (tamper) auth = tamper(auth, 'channel', params);
        c.authCalls.push({ kind: 'channel', channel: params.channelName, socket_id: params.socketId });
        callback(null, auth);
      } catch (e) {
        callback(e, null);
      }
    },
  };
  const userAuthentication = {
    customHandler: (params, callback) => {
      try {
        let auth = authLib.authenticateUser(params.socketId, userData ?? { id: `${name}-user` });
        if (tamper) auth = tamper(auth, 'user', params);
        c.authCalls.push({ kind: 'user', socket_id: params.socketId });
        callback(null, auth);
      } catch (e) {
        callback(e, null);
      }
    },
  };
  const options = {
    cluster: 'mt1',
    wsHost: host,
    wsPort: Number(port),
    forceTLS: false,
    enabledTransports: ['ws'],
    enableStats: false,
    channelAuthorization,
    userAuthentication,
    nacl,
  };
  if (activityTimeout) options.activityTimeout = activityTimeout;
  if (pongTimeout) options.pongTimeout = pongTimeout;
  const pusher = new Pusher(key, options);
  c.pusher = pusher;
  c.url = `ws://${host}:${port}/app/${key}?protocol=7&client=js&version=${PUSHER_JS_VERSION}&flash=false`;

  // What pusher-js sends: every protocol event goes through connection.send_event.
  const origSend = pusher.connection.send_event.bind(pusher.connection);
  pusher.connection.send_event = (event, data, channel) => {
    const f = { event, data };
    if (channel) f.channel = channel;
    let wire = f; // as serialized on the wire (undefined fields dropped)
    try {
      wire = JSON.parse(JSON.stringify(f));
    } catch {}
    c.sent.push({ t: Date.now(), ...wire });
    return origSend(event, data, channel);
  };
  pusher.connection.bind('message', (ev) => {
    c.frames.push({ t: Date.now(), ...ev });
    if (c.frames.length > 5000) c.frames.shift();
  });
  pusher.connection.bind('error', (err) => {
    const e = { t: Date.now(), type: err?.type, data: err?.data ?? err?.error?.data ?? null };
    if (err?.error && !e.data) e.error = String(err.error?.message ?? err.error);
    c.errors.push(e);
    log(`${name}: connection error ${JSON.stringify(e)}`);
  });
  pusher.connection.bind('state_change', ({ previous, current }) => {
    c.states.push({ t: Date.now(), previous, current });
  });

  c.socketId = () => pusher.connection.socket_id;
  c.state = () => pusher.connection.state;
  c.connected = async (deadline) => {
    await waitUntil(
      () => {
        const st = pusher.connection.state;
        if (st === 'failed') throw new Error(`${name}: pusher-js connection failed (errors ${JSON.stringify(c.errors.slice(-3))})`);
        return st === 'connected';
      },
      deadline,
      () => `${name} to connect to ${c.url} (state ${pusher.connection.state}, states ${c.states.map((s) => s.current).join('>')}, errors ${JSON.stringify(c.errors.slice(-3))})`,
    );
    return pusher.connection.socket_id;
  };

  /**
   * Subscribes and records the channel's events (after pusher-js's handling: decrypted for
   * private-encrypted channels, metadata with user_id on presence channels) in `sub.events`.
   * `sub.outcome()` resolves to {ok:true, data} on pusher:subscription_succeeded, or
   * {ok:false, error} on pusher:subscription_error, or a connection-level pusher:error that
   * arrived after the subscribe was sent.
   */
  c.subscribe = (channelName) => {
    const sentBefore = Date.now();
    const channel = pusher.subscribe(channelName);
    const sub = { name: channelName, channel, events: [], succeeded: null, error: null };
    channel.bind_global((event, data) => {
      if (event === 'pusher:subscription_succeeded') sub.succeeded = { t: Date.now(), data };
      else if (event === 'pusher:subscription_error') sub.error = { t: Date.now(), data };
    });
    // Named bindings receive the metadata argument (user_id on presence channels).
    const origEmit = channel.emit.bind(channel);
    channel.emit = (event, data, metadata) => {
      sub.events.push({ t: Date.now(), event, data, metadata: metadata ?? null });
      return origEmit(event, data, metadata);
    };
    sub.outcome = async (deadline) => {
      await waitUntil(
        () => sub.succeeded || sub.error || c.errors.some((e) => e.t >= sentBefore && e.type === 'PusherError'),
        deadline,
        () => `${name}: the subscription to ${channelName} to succeed or fail (frames: ${JSON.stringify(c.frames.slice(-4))})`,
      );
      if (sub.succeeded) return { ok: true, data: sub.succeeded.data };
      if (sub.error) return { ok: false, via: 'channel pusher:subscription_error', error: sub.error.data };
      const e = c.errors.find((x) => x.t >= sentBefore && x.type === 'PusherError');
      return { ok: false, via: 'connection pusher:error', error: e.data };
    };
    sub.waitEvent = async (event, deadline, pred = () => true) =>
      waitUntil(
        () => sub.events.find((e) => e.event === event && pred(e)),
        deadline,
        () => `${name}: event ${event} on ${channelName} (got ${JSON.stringify(sub.events.slice(-5).map((e) => e.event))})`,
      );
    return sub;
  };

  /** Frames received on `channel` with event name `event` (raw, before channel handling). */
  c.framesOf = (channel, event) => c.frames.filter((f) => f.channel === channel && (!event || f.event === event));
  c.waitFrame = (deadline, pred, what) =>
    waitUntil(() => c.frames.find(pred), deadline, () => `${name}: ${what} (last frames ${JSON.stringify(c.frames.slice(-4))})`);

  c.close = () => {
    try {
      pusher.disconnect();
    } catch (e) {
      log(`${name}: disconnect failed: ${e.message}`);
    }
  };
  return c;
}
