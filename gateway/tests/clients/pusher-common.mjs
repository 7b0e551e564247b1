// What the Pusher Channels test clients (pusher-*.mjs) share beyond common.mjs: wrappers around
// the unmodified npm packages `pusher-js` (the client, Node build) and `pusher` (the server/HTTP
// API library), and the versions of both. The conventions (one JSON line on stdout, bounded
// waits, hard timeout) are those of common.mjs.
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
import { clip, waitUntil } from './common.mjs';

export { Pusher, PusherServer, nacl };

const require = createRequire(import.meta.url);
/** The installed versions of the two libraries (reported in every result). */
export const PUSHER_JS_VERSION = require('pusher-js/package.json').version;
export const PUSHER_LIB_VERSION = require('pusher/package.json').version;

/**
 * The options every pusher-*.mjs script starts with (a parseArgs spec, spread first into the
 * script's own): the app under test, served on one host and port (WebSocket and HTTP API).
 */
export const APP_ARGS = {
  host: { type: 'string', default: '127.0.0.1' },
  port: { type: 'int', default: 0 },
  'app-id': { type: 'string', default: '' },
  key: { type: 'string', default: '' },
  secret: { type: 'string', default: '' },
};

/** The "bad arguments" messages for APP_ARGS missing from parsed `opts` (an array to extend). */
export function appArgErrors(opts) {
  const errors = [];
  if (!opts.port) errors.push('--port is required');
  for (const k of ['app-id', 'key', 'secret']) if (!opts[k]) errors.push(`--${k} is required`);
  return errors;
}

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
