// Pusher Channels (protocol 7) compatibility checks of a server, with the unmodified npm clients:
// pusher-js (Node build) for the WebSocket side, the `pusher` server library for the HTTP API and
// the auth signatures, and a raw `ws` socket where the exact frames matter.
//
//   node pusher-check.mjs --host 127.0.0.1 --port P --app-id ID --key K --secret S
//        [--bad-secret X] [--timeout-ms 30000] [--check-timeout-ms 6000]
//        [--only name,name] [--skip name,name] [--verbose] [--trace]
//
// The server serves ws://HOST:PORT/app/KEY (WebSocket) and http://HOST:PORT/apps/ID/... (HTTP
// API) on one listener; the app must have client events enabled (client-* checks) and accept
// user sign-in. Every check uses its own clients and fresh channel names (a per-run nonce), so
// runs may repeat against one server.
//
// Last stdout line: {"ok":<all run checks passed>,"checks":[{"name","ok","ms","detail"}...],
//                    "skipped":[...],"pusher_js":"8.6.0","pusher":"5.3.4","ms":...}
// Exit 0 iff ok. 2 for bad arguments. A hard timeout (--timeout-ms) prints what was done.

import { createHash, createHmac, randomBytes } from 'node:crypto';
import WebSocket from 'ws';
import { finish, hardTimeout, jsonEqual, makeLog, nonce, parseArgs, sleep, splitList, waitUntil } from './common.mjs';
import {
  APP_ARGS,
  PUSHER_JS_VERSION,
  PUSHER_LIB_VERSION,
  apiCall,
  appArgErrors,
  capturePusherJsLog,
  makeClient,
  makeServerLib,
  pusherJsLogTail,
} from './pusher-common.mjs';

const log = makeLog('pusher-check');
const started = Date.now();
const checks = [];
const skipped = [];
let currentCheck = null;
const base = () => ({ pusher_js: PUSHER_JS_VERSION, pusher: PUSHER_LIB_VERSION });

let opts;
try {
  opts = parseArgs(process.argv.slice(2), {
    ...APP_ARGS,
    'bad-secret': { type: 'string', default: '' },
    'timeout-ms': { type: 'int', default: 30000 },
    'check-timeout-ms': { type: 'int', default: 6000 },
    only: { type: 'string', default: '' },
    skip: { type: 'string', default: '' },
    verbose: { type: 'bool', default: false },
    trace: { type: 'bool', default: false },
  });
} catch (e) {
  finish({ ok: false, checks: [], error: `bad arguments: ${e.message}`, ...base() }, 2);
}
const argErrors = appArgErrors(opts);
if (opts['timeout-ms'] < 5000) argErrors.push('--timeout-ms must be at least 5000');
if (opts['check-timeout-ms'] < 1000) argErrors.push('--check-timeout-ms must be at least 1000');
if (argErrors.length) finish({ ok: false, checks: [], error: `bad arguments: ${argErrors.join('; ')}`, ...base() }, 2);

const { host, port, key, secret } = opts;
const appId = opts['app-id'];
const badSecret = opts['bad-secret'] || `${secret}-wrong`;
const only = splitList(opts.only);
const skip = splitList(opts.skip);
const N = nonce();
capturePusherJsLog({ verbose: opts.verbose, log });

const lib = makeServerLib({ host, port, appId, key, secret });
const badLib = makeServerLib({ host, port, appId, key, secret: badSecret });

// Checks stop 1.5 s before the hard timeout, so the result is always printed by the normal path.
const globalDeadline = started + opts['timeout-ms'] - 1500;
hardTimeout(
  opts['timeout-ms'],
  () => ({
    ok: false,
    checks: currentCheck ? [...checks, { name: currentCheck, ok: false, detail: { error: 'interrupted by the hard timeout' } }] : checks,
    skipped,
    ...base(),
  }),
  { unref: true },
);

let noServer = ''; // set when the connect check failed: the other checks are not run
const clientsToClose = new Set();
function closeAll() {
  for (const c of clientsToClose) c.close();
  clientsToClose.clear();
}

class CheckFailed extends Error {}
function expect(cond, msg) {
  if (!cond) throw new CheckFailed(msg);
}

/** Runs one named check with its own deadline; records {name, ok, ms, detail}. */
async function check(name, fn) {
  if ((only.length && !only.includes(name)) || skip.includes(name)) {
    skipped.push(name);
    return;
  }
  const t0 = Date.now();
  const detail = {};
  if (noServer) {
    checks.push({ name, ok: false, ms: 0, detail: { error: `not run: ${noServer}` } });
    return;
  }
  if (globalDeadline - t0 < 1000) {
    checks.push({ name, ok: false, ms: 0, detail: { error: 'not run: no time left before --timeout-ms' } });
    return;
  }
  currentCheck = name;
  const deadline = Math.min(t0 + opts['check-timeout-ms'], globalDeadline);
  const ctx = {
    deadline,
    detail,
    /** A pusher-js client owned by this check (closed when it ends). */
    client(name2, extra = {}) {
      const c = makeClient({ host, port, key, authLib: lib, name: name2, log, ...extra });
      clientsToClose.add(c);
      ctx.clients.push(c);
      return c;
    },
    clients: [],
  };
  let ok = false;
  try {
    await fn(ctx);
    ok = true;
  } catch (e) {
    detail.error = e instanceof CheckFailed ? e.message : `${e?.message ?? e}`;
    if (!(e instanceof CheckFailed) && e?.stack && opts.verbose) log(e.stack);
    detail.pusher_js_log = pusherJsLogTail(6);
    detail.client_errors = Object.fromEntries(ctx.clients.map((c) => [c.name, c.errors.slice(-3)]));
  } finally {
    if (opts.trace) {
      for (const c of ctx.clients) {
        log(`[${name}] ${c.name} sent: ${JSON.stringify(c.sent.map(({ t, ...f }) => f))}`);
        log(`[${name}] ${c.name} received: ${JSON.stringify(c.frames.map(({ t, ...f }) => f))}`);
      }
    }
    for (const c of ctx.clients) {
      c.close();
      clientsToClose.delete(c);
    }
    currentCheck = null;
  }
  const ms = Date.now() - t0;
  checks.push({ name, ok, ms, detail });
  log(`${ok ? 'PASS' : 'FAIL'} ${name} (${ms} ms)${ok ? '' : `: ${detail.error}`}`);
}

/** Waits a moment for something that must NOT arrive (after a later marker already did). */
const GRACE_MS = 250;
const strip = (f) => {
  if (!f) return f;
  const { t, ...rest } = f;
  return rest;
};

// ---------------------------------------------------------------- raw WebSocket helper

/** A raw ws connection that records text frames (parsed) and the close. */
function rawSocket(url) {
  const r = { url, frames: [], texts: [], close: null, open: false, error: null };
  const ws = new WebSocket(url, { handshakeTimeout: 5000 });
  r.ws = ws;
  ws.on('open', () => {
    r.open = true;
  });
  ws.on('message', (data, isBinary) => {
    const text = isBinary ? `binary:${data.toString('hex')}` : data.toString('utf8');
    r.texts.push(text);
    try {
      r.frames.push(JSON.parse(text));
    } catch {
      r.frames.push({ unparsable: text });
    }
  });
  ws.on('close', (code, reason) => {
    r.close = { code, reason: reason.toString() };
  });
  ws.on('error', (e) => {
    r.error = e.message;
  });
  r.send = (obj) => ws.send(typeof obj === 'string' ? obj : JSON.stringify(obj));
  r.waitFrame = (deadline, pred, what) =>
    waitUntil(
      () => {
        const i = r.frames.findIndex(pred);
        if (i >= 0) return { frame: r.frames[i], text: r.texts[i] };
        if (r.close) throw new Error(`raw socket closed (${r.close.code} ${r.close.reason}) while waiting for ${what}; frames ${JSON.stringify(r.texts.slice(-4))}`);
        return null;
      },
      deadline,
      () => `raw socket: ${what} (frames ${JSON.stringify(r.texts.slice(-4))}${r.error ? `, error ${r.error}` : ''})`,
    );
  r.end = () => {
    try {
      ws.terminate();
    } catch {}
  };
  return r;
}
const wsUrl = (k = key) => `ws://${host}:${port}/app/${k}?protocol=7&client=js&version=${PUSHER_JS_VERSION}&flash=false`;

// ---------------------------------------------------------------- manual HTTP API signing

/**
 * Builds a signed HTTP API URL the way the `pusher` lib does (lib/requests.js), with knobs to
 * break it: the string to sign is "METHOD\nPATH\nk1=v1&k2=v2..." (keys sorted, values NOT
 * url-encoded, auth_signature excluded), HMAC-SHA256 hex with the secret.
 */
function signedUrl({ method, path, params = {}, body, timestamp, md5Of }) {
  const q = { auth_key: key, auth_timestamp: timestamp ?? Math.floor(Date.now() / 1000), auth_version: '1.0', ...params };
  if (body !== undefined) q.body_md5 = createHash('md5').update(md5Of ?? body, 'utf8').digest('hex');
  const qs = Object.keys(q)
    .sort()
    .map((k) => `${k}=${q[k]}`)
    .join('&');
  const sig = createHmac('sha256', secret).update([method, path, qs].join('\n')).digest('hex');
  return `http://${host}:${port}${path}?${qs}&auth_signature=${sig}`;
}
async function rawApi(method, url, body) {
  const ctl = AbortSignal.timeout(5000);
  try {
    const res = await fetch(url, { method, body, headers: body ? { 'content-type': 'application/json' } : {}, signal: ctl });
    const raw = await res.text();
    let parsed = raw;
    try {
      parsed = JSON.parse(raw);
    } catch {}
    return { status: res.status, body: parsed };
  } catch (e) {
    return { status: null, error: e.message };
  }
}

// ====================================================================== the checks

await check('connect', async ({ client, deadline, detail }) => {
  const a = client('a');
  const sid = await a.connected(deadline);
  detail.url = a.url;
  detail.socket_id = sid;
  detail.activity_timeout_ms = a.pusher.connection.activityTimeout;
  expect(typeof sid === 'string' && /^\d+\.\d+$/.test(sid), `socket_id ${JSON.stringify(sid)} is not digits.digits`);
});
if (checks.length && checks[checks.length - 1].name === 'connect' && !checks[checks.length - 1].ok) noServer = 'pusher-js could not connect (the connect check failed)';

await check('raw_handshake_ping', async ({ deadline, detail }) => {
  const r = rawSocket(wsUrl());
  try {
    const est = await r.waitFrame(deadline, (f) => f.event, 'the first frame');
    detail.connection_established = est.text;
    expect(est.frame.event === 'pusher:connection_established', `first frame is ${est.text}, not pusher:connection_established`);
    expect(typeof est.frame.data === 'string', 'connection_established data must be a JSON-encoded string (pusher-js parses either; other Pusher clients need the string)');
    const inner = JSON.parse(est.frame.data);
    expect(typeof inner.socket_id === 'string' && /^\d+\.\d+$/.test(inner.socket_id), `socket_id ${JSON.stringify(inner.socket_id)} is not digits.digits`);
    expect(Number.isInteger(inner.activity_timeout) && inner.activity_timeout > 0, `activity_timeout ${JSON.stringify(inner.activity_timeout)} is not a positive integer (seconds); pusher-js refuses a handshake without it`);
    r.send({ event: 'pusher:ping', data: {} });
    const pong = await r.waitFrame(deadline, (f) => f.event === 'pusher:pong', 'pusher:pong after pusher:ping');
    detail.pong = pong.text;
    // A public subscribe and a trigger, to record the exact frames.
    const ch = `raw-${N}`;
    r.send({ event: 'pusher:subscribe', data: { channel: ch } });
    const ok = await r.waitFrame(deadline, (f) => f.event === 'pusher_internal:subscription_succeeded' && f.channel === ch, 'pusher_internal:subscription_succeeded');
    detail.subscription_succeeded = ok.text;
    const tr = await apiCall(lib.trigger(ch, 'raw-event', { hello: 'raw' }));
    expect(tr.status === 200, `trigger answered ${tr.status} ${JSON.stringify(tr.body ?? tr.error)}`);
    const ev = await r.waitFrame(deadline, (f) => f.event === 'raw-event', 'the triggered event');
    detail.event = ev.text;
    expect(ev.frame.channel === ch, 'event frame has no/wrong channel');
    expect(typeof ev.frame.data === 'string' && jsonEqual(JSON.parse(ev.frame.data), { hello: 'raw' }), 'event data must be the JSON string the server lib sent');
  } finally {
    r.end();
  }
});

await check('pusher_js_ping_pong', async ({ client, deadline, detail }) => {
  // activityTimeout 1000: pusher-js sends {"event":"pusher:ping","data":{}} after 1 s without
  // traffic and reconnects when no pusher:pong arrives within pongTimeout.
  const a = client('pinger', { activityTimeout: 1000, pongTimeout: 2500 });
  await a.connected(deadline);
  const connectedAt = Date.now();
  const pong = await a.waitFrame(deadline, (f) => f.event === 'pusher:pong' && f.t > connectedAt, 'pusher:pong (pusher-js pings after 1 s idle)');
  detail.pong_after_ms = pong.t - connectedAt;
  detail.sent_ping = true; // pusher-js's own ping goes through Connection.send_event: seen as the pong it caused
  await sleep(300);
  const after = a.states.filter((s) => s.t > connectedAt).map((s) => s.current);
  detail.states_after_connect = after;
  expect(a.state() === 'connected' && after.length === 0, `pusher-js did not stay connected (states after connecting: ${after.join('>')})`);
});

await check('bad_app_key', async ({ deadline, detail }) => {
  const r = rawSocket(wsUrl(`no-such-key-${N}`));
  try {
    await waitUntil(() => r.close || r.error, deadline, 'the server to close a connection with an unknown app key');
    detail.frames = r.texts;
    detail.close = r.close;
    detail.error = r.error ?? undefined;
    const err = r.frames.find((f) => f.event === 'pusher:error');
    expect(r.close && r.close.code >= 4000 && r.close.code < 4100, `close code ${JSON.stringify(r.close)} (pusher-js only stops retrying on 4000-4099; 4001 = app does not exist)`);
    if (err) detail.error_code = err.data?.code;
  } finally {
    r.end();
  }
});

await check('public_channel', async ({ client, deadline, detail }) => {
  const a = client('a');
  await a.connected(deadline);
  const ch = `pub-${N}`;
  const s = a.subscribe(ch);
  const out = await s.outcome(deadline);
  expect(out.ok, `subscription failed: ${JSON.stringify(out)}`);
  const str = `hello ${N}`;
  const r1 = await apiCall(lib.trigger(ch, 'greet', str));
  detail.trigger_response = { status: r1.status, body: r1.body };
  expect(r1.status === 200, `trigger (string data) answered ${r1.status} ${JSON.stringify(r1.body ?? r1.error)}`);
  await s.waitEvent('greet', deadline, (e) => e.data === str);
  const obj = { a: 1, b: 'x', nested: { c: [1, 2, { d: null }] }, u: 'ü€😀' };
  const r2 = await apiCall(lib.trigger(ch, 'greet-obj', obj));
  expect(r2.status === 200, `trigger (object data) answered ${r2.status} ${JSON.stringify(r2.body ?? r2.error)}`);
  const e2 = await s.waitEvent('greet-obj', deadline);
  expect(jsonEqual(e2.data, obj), `object data arrived as ${JSON.stringify(e2.data)}`);
  detail.string_data = 'ok';
  detail.object_data = 'ok';
});

await check('trigger_exclude_socket_id', async ({ client, deadline, detail }) => {
  const a = client('a');
  const b = client('b');
  await Promise.all([a.connected(deadline), b.connected(deadline)]);
  const ch = `excl-${N}`;
  const sa = a.subscribe(ch);
  const sb = b.subscribe(ch);
  for (const s of [sa, sb]) expect((await s.outcome(deadline)).ok, `subscription to ${ch} failed`);
  const r = await apiCall(lib.trigger(ch, 'excluded', { n: 1 }, { socket_id: a.socketId() }));
  expect(r.status === 200, `trigger with socket_id answered ${r.status} ${JSON.stringify(r.body ?? r.error)}`);
  await apiCall(lib.trigger(ch, 'marker', { n: 2 }));
  await sb.waitEvent('excluded', deadline);
  await sa.waitEvent('marker', deadline);
  await sleep(GRACE_MS);
  expect(a.framesOf(ch, 'excluded').length === 0, 'the connection named by socket_id received the event');
  detail.other_subscriber_received = true;
});

await check('private_channel_auth', async ({ client, deadline, detail }) => {
  const ch = `private-${N}`;
  const good = client('good');
  const bad = client('bad-secret', { authLib: badLib });
  const flipLast = (s) => s.slice(0, -1) + (s.endsWith('0') ? '1' : '0');
  const tampered = client('tampered', { tamper: (auth) => ({ ...auth, auth: flipLast(auth.auth) }) });
  const otherSocket = client('other-socket', { tamper: (auth, kind, params) => lib.authorizeChannel('1234.5678', params.channelName) });
  const wrongKey = client('wrong-key-prefix', { tamper: (auth) => ({ ...auth, auth: `not-${key}:${auth.auth.split(':')[1]}` }) });
  const all = [good, bad, tampered, otherSocket, wrongKey];
  await Promise.all(all.map((c) => c.connected(deadline)));
  const subs = Object.fromEntries(all.map((c) => [c.name, c.subscribe(ch)]));
  const outs = {};
  for (const c of all) outs[c.name] = await subs[c.name].outcome(deadline);
  detail.good = outs.good;
  expect(outs.good.ok, `correct auth was refused: ${JSON.stringify(outs.good)}`);
  for (const c of all.slice(1)) {
    detail[c.name] = outs[c.name];
    expect(!outs[c.name].ok, `${c.name}: a bad signature was accepted`);
  }
  detail.sent_subscribe = strip(good.sent.find((f) => f.event === 'pusher:subscribe'));
  // Refused clients must get nothing from the channel; the good one must.
  const r = await apiCall(lib.trigger(ch, 'secret-event', { n: 1 }));
  expect(r.status === 200, `trigger answered ${r.status}`);
  await subs.good.waitEvent('secret-event', deadline);
  await sleep(GRACE_MS);
  for (const c of all.slice(1)) expect(c.framesOf(ch, 'secret-event').length === 0, `${c.name} received an event of a channel it was refused`);
  detail.refused_connections_state = Object.fromEntries(all.slice(1).map((c) => [c.name, c.state()]));
});

await check('presence_channel', async ({ client, deadline, detail }) => {
  const ch = `presence-${N}`;
  const a = client('alice', { presence: { user_id: 'u-alice', user_info: { name: 'Alice', n: 1 } } });
  const b = client('bob', { presence: { user_id: 'u-bob', user_info: { name: 'Bob', tags: ['x'] } } });
  await Promise.all([a.connected(deadline), b.connected(deadline)]);
  const sa = a.subscribe(ch);
  const oa = await sa.outcome(deadline);
  expect(oa.ok, `alice's subscription failed: ${JSON.stringify(oa)}`);
  const ma = sa.channel.members;
  detail.alice_members_initial = { count: ma.count, me: ma.me, hash: ma.members };
  expect(ma.count === 1 && ma.me?.id === 'u-alice' && jsonEqual(ma.me?.info, { name: 'Alice', n: 1 }), `alice's members after subscribing: ${JSON.stringify(detail.alice_members_initial)}`);

  let sb = b.subscribe(ch);
  const ob = await sb.outcome(deadline);
  expect(ob.ok, `bob's subscription failed: ${JSON.stringify(ob)}`);
  const mb = sb.channel.members;
  detail.bob_members = { count: mb.count, me: mb.me, hash: mb.members };
  expect(mb.count === 2 && mb.me?.id === 'u-bob' && jsonEqual(mb.members['u-alice'], { name: 'Alice', n: 1 }) && jsonEqual(mb.members['u-bob'], { name: 'Bob', tags: ['x'] }), `bob's members: ${JSON.stringify(detail.bob_members)}`);
  const added = await sa.waitEvent('pusher:member_added', deadline);
  detail.member_added = added.data;
  expect(jsonEqual(added.data, { id: 'u-bob', info: { name: 'Bob', tags: ['x'] } }), `member_added gave ${JSON.stringify(added.data)}`);
  expect(ma.count === 2, `alice's count after bob joined: ${ma.count}`);
  detail.member_added_frame = strip(a.framesOf(ch, 'pusher_internal:member_added')[0]);

  // Leave by unsubscribe.
  b.pusher.unsubscribe(ch);
  const removed = await sa.waitEvent('pusher:member_removed', deadline);
  detail.member_removed = removed.data;
  expect(removed.data?.id === 'u-bob', `member_removed gave ${JSON.stringify(removed.data)}`);
  expect(ma.count === 1, `alice's count after bob left: ${ma.count}`);
  detail.member_removed_frame = strip(a.framesOf(ch, 'pusher_internal:member_removed')[0]);

  // Join again, then leave by closing the connection.
  sb = b.subscribe(ch);
  expect((await sb.outcome(deadline)).ok, 'bob could not subscribe again');
  await sa.waitEvent('pusher:member_added', deadline, (e) => e !== added);
  b.close();
  await sa.waitEvent('pusher:member_removed', deadline, (e) => e !== removed);
  expect(ma.count === 1, `alice's count after bob disconnected: ${ma.count}`);
  detail.leave_by_disconnect = 'member_removed';
});

await check('presence_same_user_twice', async ({ client, deadline, detail }) => {
  // One user on two connections is one member: one member_added, member_removed only when the
  // last of its connections leaves.
  const ch = `presence-twice-${N}`;
  const o = client('observer', { presence: { user_id: 'u-obs', user_info: {} } });
  const a1 = client('carol-1', { presence: { user_id: 'u-carol', user_info: { name: 'Carol' } } });
  const a2 = client('carol-2', { presence: { user_id: 'u-carol', user_info: { name: 'Carol' } } });
  await Promise.all([o, a1, a2].map((c) => c.connected(deadline)));
  const so = o.subscribe(ch);
  expect((await so.outcome(deadline)).ok, 'observer subscription failed');
  expect((await a1.subscribe(ch).outcome(deadline)).ok, 'carol-1 subscription failed');
  await so.waitEvent('pusher:member_added', deadline);
  const s2 = a2.subscribe(ch);
  expect((await s2.outcome(deadline)).ok, 'carol-2 subscription failed');
  detail.second_connection_members = { count: s2.channel.members.count, ids: Object.keys(s2.channel.members.members) };
  expect(s2.channel.members.count === 2, `the second connection of carol sees ${s2.channel.members.count} members (want 2: observer, carol)`);
  await apiCall(lib.trigger(ch, 'marker', {}));
  await so.waitEvent('marker', deadline);
  await sleep(GRACE_MS);
  const addedCount = so.events.filter((e) => e.event === 'pusher:member_added').length;
  expect(addedCount === 1, `observer got ${addedCount} member_added for one user on two connections`);
  a2.close();
  await apiCall(lib.trigger(ch, 'marker2', {}));
  await so.waitEvent('marker2', deadline);
  await sleep(GRACE_MS);
  expect(!so.events.some((e) => e.event === 'pusher:member_removed'), 'member_removed while carol still had a connection in the channel');
  a1.close();
  await so.waitEvent('pusher:member_removed', deadline);
  detail.observer_count_end = so.channel.members.count;
  expect(so.channel.members.count === 1, `observer count at the end: ${so.channel.members.count}`);
});

async function clientEventPair(ctx, ch, presence) {
  const { client, deadline, detail } = ctx;
  const a = client('sender', presence ? { presence: { user_id: 'u-sender', user_info: { name: 'S' } } } : {});
  const b = client('receiver', presence ? { presence: { user_id: 'u-receiver', user_info: { name: 'R' } } } : {});
  await Promise.all([a.connected(deadline), b.connected(deadline)]);
  const sa = a.subscribe(ch);
  const sb = b.subscribe(ch);
  for (const s of [sa, sb]) expect((await s.outcome(deadline)).ok, `subscription to ${ch} failed`);
  const payload = { typing: true, n: N };
  const sentOk = sa.channel.trigger('client-typing', payload);
  detail.trigger_returned = sentOk;
  detail.sent_frame = strip(a.sent.find((f) => f.event === 'client-typing'));
  return { a, b, sa, sb, payload };
}

await check('client_events_private', async (ctx) => {
  const ch = `private-ce-${N}`;
  const { a, b, sa, sb, payload } = await clientEventPair(ctx, ch, false);
  const got = await sb.waitEvent('client-typing', ctx.deadline);
  expect(jsonEqual(got.data, payload), `receiver got ${JSON.stringify(got.data)}`);
  ctx.detail.received_frame = strip(b.framesOf(ch, 'client-typing')[0]);
  await apiCall(lib.trigger(ch, 'marker', {}));
  await sa.waitEvent('marker', ctx.deadline);
  await sleep(GRACE_MS);
  expect(a.framesOf(ch, 'client-typing').length === 0, 'the sender received its own client event');
  ctx.detail.sender_errors = a.errors;
});

await check('client_events_presence', async (ctx) => {
  const ch = `presence-ce-${N}`;
  const { a, b, sa, sb, payload } = await clientEventPair(ctx, ch, true);
  const got = await sb.waitEvent('client-typing', ctx.deadline);
  expect(jsonEqual(got.data, payload), `receiver got ${JSON.stringify(got.data)}`);
  ctx.detail.metadata = got.metadata;
  ctx.detail.received_frame = strip(b.framesOf(ch, 'client-typing')[0]);
  expect(got.metadata?.user_id === 'u-sender', `metadata.user_id is ${JSON.stringify(got.metadata?.user_id)} (the server must add "user_id":"u-sender" to the frame)`);
  await apiCall(lib.trigger(ch, 'marker', {}));
  await sa.waitEvent('marker', ctx.deadline);
  await sleep(GRACE_MS);
  expect(a.framesOf(ch, 'client-typing').length === 0, 'the sender received its own client event');
});

await check('client_event_public_refused', async (ctx) => {
  const ch = `pubce-${N}`;
  const t0 = Date.now();
  const { a, b, sb } = await clientEventPair(ctx, ch, false);
  await apiCall(lib.trigger(ch, 'marker', {}));
  await sb.waitEvent('marker', ctx.deadline);
  await sleep(GRACE_MS * 2);
  ctx.detail.sender_got = a.errors.filter((e) => e.t >= t0).map(({ t, ...e }) => e);
  ctx.detail.sender_error_frames = a.frames.filter((f) => f.event === 'pusher:error').map(strip);
  ctx.detail.sender_state_after = a.state();
  ctx.detail.pusher_js_reports = ctx.detail.sender_error_frames.length ? 'pusher:error' : 'nothing';
  expect(b.framesOf(ch, 'client-typing').length === 0, 'a client event on a public channel was delivered to another subscriber');
});

await check('private_encrypted_channel', async ({ client, deadline, detail }) => {
  const masterKey = randomBytes(32).toString('base64');
  const encLib = makeServerLib({ host, port, appId, key, secret, encryptionMasterKeyBase64: masterKey });
  const a = client('enc', { authLib: encLib });
  await a.connected(deadline);
  const ch = `private-encrypted-${N}`;
  const s = a.subscribe(ch);
  const out = await s.outcome(deadline);
  expect(out.ok, `subscription failed: ${JSON.stringify(out)}`);
  const sentSub = a.sent.find((f) => f.event === 'pusher:subscribe' && f.data?.channel === ch);
  detail.sent_subscribe_keys = Object.keys(sentSub?.data ?? {});
  expect(sentSub && !('shared_secret' in sentSub.data), 'pusher-js sent shared_secret to the server');
  const payload = { secret: 'plain text', n: N };
  const r = await apiCall(encLib.trigger(ch, 'enc-event', payload));
  detail.trigger_response = { status: r.status, body: r.body };
  expect(r.status === 200, `encrypted trigger answered ${r.status} ${JSON.stringify(r.body ?? r.error)}`);
  const got = await s.waitEvent('enc-event', deadline);
  expect(jsonEqual(got.data, payload), `decrypted data ${JSON.stringify(got.data)}`);
  const raw = a.framesOf(ch, 'enc-event')[0];
  detail.wire_data_keys = raw && typeof raw.data === 'object' ? Object.keys(raw.data) : typeof raw?.data;
  expect(raw && typeof raw.data?.nonce === 'string' && typeof raw.data?.ciphertext === 'string', 'the wire frame must carry the {nonce, ciphertext} JSON string unchanged');
});

await check('trigger_batch', async ({ client, deadline, detail }) => {
  const a = client('a');
  await a.connected(deadline);
  const c1 = `batch1-${N}`;
  const c2 = `batch2-${N}`;
  const s1 = a.subscribe(c1);
  const s2 = a.subscribe(c2);
  for (const s of [s1, s2]) expect((await s.outcome(deadline)).ok, 'subscription failed');
  const r = await apiCall(
    lib.triggerBatch([
      { channel: c1, name: 'b-one', data: { i: 1 } },
      { channel: c2, name: 'b-two', data: { i: 2 } },
      { channel: c1, name: 'b-three', data: 'three' },
    ]),
  );
  detail.response = { status: r.status, body: r.body };
  expect(r.status === 200, `batch trigger answered ${r.status} ${JSON.stringify(r.body ?? r.error)}`);
  const e1 = await s1.waitEvent('b-one', deadline);
  const e2 = await s2.waitEvent('b-two', deadline);
  const e3 = await s1.waitEvent('b-three', deadline);
  expect(jsonEqual(e1.data, { i: 1 }) && jsonEqual(e2.data, { i: 2 }) && e3.data === 'three', `batch data: ${JSON.stringify([e1.data, e2.data, e3.data])}`);
  const order = s1.events.filter((e) => e.event.startsWith('b-')).map((e) => e.event);
  detail.channel1_order = order;
  expect(order.join() === 'b-one,b-three', `events of one channel out of order: ${order}`);
});

await check('http_api_queries', async ({ client, deadline, detail }) => {
  const prefix = `presence-q${N}`;
  const P = `${prefix}-room`;
  const pub = `q${N}-pub`;
  const a = client('qa', { presence: { user_id: 'u-qa', user_info: { name: 'QA' } } });
  const b = client('qb', { presence: { user_id: 'u-qb', user_info: { name: 'QB' } } });
  await Promise.all([a.connected(deadline), b.connected(deadline)]);
  for (const s of [a.subscribe(P), b.subscribe(P), a.subscribe(pub)]) expect((await s.outcome(deadline)).ok, `subscription to ${s.name} failed`);

  // Presence state may take a moment to reach the API (several nodes): each query is polled for
  // up to 1.5 s until its answer is right; every answer is recorded, every wrong one reported.
  const failures = [];
  const query = async (label, fn, good, why) => {
    let last;
    const until = Math.min(deadline - 200, Date.now() + 1500);
    for (;;) {
      last = await fn();
      if (good(last) || Date.now() >= until) break;
      await sleep(100);
    }
    detail[label] = { status: last.status, body: last.body ?? last.error };
    if (!good(last)) failures.push(`${label}: ${why}`);
    return last;
  };
  await query(
    'channels_presence_user_count',
    () => apiCall(lib.get({ path: '/channels', params: { filter_by_prefix: prefix, info: 'user_count' } })),
    (r) => r.status === 200 && r.body?.channels?.[P]?.user_count === 2 && Object.keys(r.body.channels).every((n) => n.startsWith(prefix)),
    `GET /channels?filter_by_prefix=${prefix}&info=user_count must be 200 {"channels":{"${P}":{"user_count":2}}}`,
  );
  await query(
    'channels_public_prefix',
    () => apiCall(lib.get({ path: '/channels', params: { filter_by_prefix: `q${N}` } })),
    (r) => r.status === 200 && typeof r.body?.channels?.[pub] === 'object' && Object.keys(r.body.channels).length === 1,
    `GET /channels?filter_by_prefix=q${N} must be 200 {"channels":{"${pub}":{}}}`,
  );
  await query(
    'channel_presence_info',
    () => apiCall(lib.get({ path: `/channels/${P}`, params: { info: 'user_count,subscription_count' } })),
    (r) => r.status === 200 && r.body?.occupied === true && r.body?.user_count === 2 && r.body?.subscription_count === 2,
    'GET /channels/P?info=user_count,subscription_count must be 200 {"occupied":true,"user_count":2,"subscription_count":2}',
  );
  await query(
    'channel_users',
    () => apiCall(lib.get({ path: `/channels/${P}/users` })),
    (r) => r.status === 200 && Array.isArray(r.body?.users) && r.body.users.map((u) => u.id).sort().join() === 'u-qa,u-qb',
    'GET /channels/P/users must be 200 {"users":[{"id":"u-qa"},{"id":"u-qb"}]}',
  );
  await query(
    'channel_unoccupied',
    () => apiCall(lib.get({ path: `/channels/empty-${N}` })),
    (r) => r.status === 200 && r.body?.occupied === false,
    'GET /channels/<unused> must be 200 {"occupied":false}',
  );
  // Recorded, not required: user_count asked of a public channel (Pusher answers 400).
  const badInfo = await apiCall(lib.get({ path: `/channels/${pub}`, params: { info: 'user_count' } }));
  detail.user_count_of_public_channel = { status: badInfo.status, body: badInfo.body ?? badInfo.error };
  expect(failures.length === 0, failures.join('; '));
});

await check('http_api_bad_signature', async ({ detail }) => {
  const ch = `sig-${N}`;
  const r = await apiCall(badLib.trigger(ch, 'x', { n: 1 }));
  detail.wrong_secret = { status: r.status, body: r.body };
  expect(r.status === 401, `a trigger signed with a wrong secret answered ${r.status} ${JSON.stringify(r.body ?? r.error)}`);
  // Recorded, not required:
  const wrongKey = makeServerLib({ host, port, appId, key: `${key}-unknown`, secret });
  const rk = await apiCall(wrongKey.trigger(ch, 'x', { n: 1 }));
  detail.unknown_auth_key = { status: rk.status, body: rk.body };
  const wrongApp = makeServerLib({ host, port, appId: `${appId}999`, key, secret });
  const ra = await apiCall(wrongApp.trigger(ch, 'x', { n: 1 }));
  detail.unknown_app_id = { status: ra.status, body: ra.body };
  const rg = await apiCall(badLib.get({ path: '/channels' }));
  detail.wrong_secret_get_channels = { status: rg.status, body: rg.body };
});

await check('http_api_stale_timestamp', async ({ detail }) => {
  const path = `/apps/${appId}/events`;
  const body = JSON.stringify({ name: 'x', channels: [`ts-${N}`], data: '{}' });
  const fresh = await rawApi('POST', signedUrl({ method: 'POST', path, body }), body);
  detail.fresh = fresh;
  expect(fresh.status === 200, `a correctly signed request (this script's own signer) answered ${fresh.status}: ${JSON.stringify(fresh.body ?? fresh.error)}`);
  const stale = await rawApi('POST', signedUrl({ method: 'POST', path, body, timestamp: Math.floor(Date.now() / 1000) - 3600 }), body);
  detail.stale_1h = stale;
  expect(stale.status === 401, `a request signed with auth_timestamp 1 h old answered ${stale.status} (Pusher: 401 beyond 600 s)`);
});

await check('http_api_body_md5_mismatch', async ({ detail }) => {
  const path = `/apps/${appId}/events`;
  const body = JSON.stringify({ name: 'x', channels: [`md5-${N}`], data: '{}' });
  const other = JSON.stringify({ name: 'y', channels: [`md5-${N}`], data: '{}' });
  const r = await rawApi('POST', signedUrl({ method: 'POST', path, body, md5Of: other }), body);
  detail.response = r;
  expect(r.status === 401 || r.status === 400, `a body whose md5 differs from the signed body_md5 answered ${r.status}`);
});

await check('user_signin_send_to_user', async ({ client, deadline, detail }) => {
  const uid = `user-${N}`;
  const u = client('signer', { userData: { id: uid, user_info: { name: 'Uma' } } });
  await u.connected(deadline);
  const got = [];
  u.pusher.user.bind('notify', (data) => got.push(data));
  u.pusher.signin();
  const ok = await u.waitFrame(deadline, (f) => f.event === 'pusher:signin_success' || f.event === 'pusher:error', 'pusher:signin_success');
  detail.sent_signin = strip(u.sent.find((f) => f.event === 'pusher:signin'));
  detail.signin_reply = strip(ok);
  expect(ok.event === 'pusher:signin_success', `the server answered the signin with ${JSON.stringify(strip(ok))}`);
  await waitUntil(() => u.pusher.user.user_data?.id === uid, deadline, 'pusher-js to accept the signin (user_data.id)');
  await waitUntil(() => u.pusher.user.serverToUserChannel?.subscribed, deadline, () => `the #server-to-user-${uid} subscription to succeed (frames ${JSON.stringify(u.frames.slice(-3).map(strip))})`);
  detail.sent_server_to_user_subscribe = strip(u.sent.find((f) => f.event === 'pusher:subscribe' && f.data?.channel?.startsWith('#server-to-user-')));
  const r = await apiCall(lib.sendToUser(uid, 'notify', { hello: uid }));
  detail.send_to_user_response = { status: r.status, body: r.body };
  expect(r.status === 200, `sendToUser answered ${r.status} ${JSON.stringify(r.body ?? r.error)}`);
  await waitUntil(() => got.length > 0, deadline, 'the sendToUser event');
  expect(jsonEqual(got[0], { hello: uid }), `sendToUser data ${JSON.stringify(got[0])}`);
  detail.received_frame = strip(u.frames.find((f) => f.event === 'notify'));
});

await check('user_signin_bad_auth', async ({ client, deadline, detail }) => {
  const flipLast = (s) => s.slice(0, -1) + (s.endsWith('0') ? '1' : '0');
  const u = client('bad-signer', { userData: { id: `bad-${N}` }, tamper: (auth, kind) => (kind === 'user' ? { ...auth, auth: flipLast(auth.auth) } : auth) });
  await u.connected(deadline);
  u.pusher.signin();
  await waitUntil(() => u.errors.length > 0 || u.frames.some((f) => f.event === 'pusher:signin_success'), deadline, 'a reaction to a badly signed pusher:signin');
  await sleep(GRACE_MS);
  detail.errors = u.errors.map(({ t, ...e }) => e);
  detail.states = u.states.map((s) => s.current);
  expect(!u.frames.some((f) => f.event === 'pusher:signin_success'), 'a badly signed signin succeeded');
  expect(u.errors.some((e) => e.data?.code === 4009), 'no error with code 4009 (connection not authorized)');
});

await check('terminate_user_connections', async ({ client, deadline, detail }) => {
  const uid = `term-${N}`;
  const u = client('terminated', { userData: { id: uid } });
  await u.connected(deadline);
  u.pusher.signin();
  await waitUntil(() => u.pusher.user.user_data?.id === uid, deadline, 'the signin to succeed');
  const t0 = Date.now();
  const r = await apiCall(lib.terminateUserConnections(uid));
  detail.response = { status: r.status, body: r.body ?? r.error };
  expect(r.status === 200, `POST /users/${uid}/terminate_connections answered ${r.status}`);
  await waitUntil(() => u.states.some((s) => s.t >= t0 && s.previous === 'connected'), deadline, "the user's connection to be closed");
  await sleep(GRACE_MS);
  detail.errors = u.errors.filter((e) => e.t >= t0).map(({ t, ...e }) => e);
  detail.states = u.states.filter((s) => s.t >= t0).map((s) => s.current);
});

await check('unsubscribe', async ({ client, deadline, detail }) => {
  const ch = `unsub-${N}`;
  const a = client('a');
  const b = client('b');
  await Promise.all([a.connected(deadline), b.connected(deadline)]);
  const sa = a.subscribe(ch);
  const sb = b.subscribe(ch);
  for (const s of [sa, sb]) expect((await s.outcome(deadline)).ok, 'subscription failed');
  await apiCall(lib.trigger(ch, 'before', {}));
  await sa.waitEvent('before', deadline);
  a.pusher.unsubscribe(ch);
  detail.sent_unsubscribe = strip(a.sent.find((f) => f.event === 'pusher:unsubscribe'));
  await sleep(200); // the unsubscribe frame has no reply: give the server time to process it
  await apiCall(lib.trigger(ch, 'after', {}));
  await sb.waitEvent('after', deadline);
  await sleep(GRACE_MS);
  expect(a.framesOf(ch, 'after').length === 0, 'an event arrived after pusher:unsubscribe');
});

await check('raw_presence_frames', async ({ client, deadline, detail }) => {
  // The exact presence frames, as a raw socket sees them (data must be JSON strings).
  const ch = `presence-raw-${N}`;
  const r = rawSocket(wsUrl());
  try {
    const est = await r.waitFrame(deadline, (f) => f.event === 'pusher:connection_established', 'connection_established');
    const sid = JSON.parse(est.frame.data).socket_id;
    const auth = lib.authorizeChannel(sid, ch, { user_id: 'u-raw', user_info: { name: 'Raw' } });
    r.send({ event: 'pusher:subscribe', data: { channel: ch, ...auth } });
    const ok = await r.waitFrame(deadline, (f) => f.event === 'pusher_internal:subscription_succeeded', 'presence subscription_succeeded');
    detail.subscription_succeeded = ok.text;
    expect(typeof ok.frame.data === 'string', 'presence subscription_succeeded data must be a JSON string');
    const pres = JSON.parse(ok.frame.data).presence;
    expect(pres && Array.isArray(pres.ids) && pres.count === 1 && jsonEqual(pres.hash, { 'u-raw': { name: 'Raw' } }) && pres.ids[0] === 'u-raw', `presence data ${ok.frame.data}`);
    const j = client('joiner', { presence: { user_id: 'u-join', user_info: { name: 'Join' } } });
    await j.connected(deadline);
    expect((await j.subscribe(ch).outcome(deadline)).ok, 'joiner subscription failed');
    const added = await r.waitFrame(deadline, (f) => f.event === 'pusher_internal:member_added', 'member_added');
    detail.member_added = added.text;
    expect(typeof added.frame.data === 'string' && jsonEqual(JSON.parse(added.frame.data), { user_id: 'u-join', user_info: { name: 'Join' } }), 'member_added data must be the JSON string {"user_id","user_info"}');
    j.close();
    const removed = await r.waitFrame(deadline, (f) => f.event === 'pusher_internal:member_removed', 'member_removed');
    detail.member_removed = removed.text;
    expect(typeof removed.frame.data === 'string' && JSON.parse(removed.frame.data).user_id === 'u-join', 'member_removed data must be the JSON string {"user_id"}');
    // A client event from the raw socket (a member) carries its user_id to others: tested with
    // pusher-js in client_events_presence. Here: a bad subscribe (no auth) on a private channel.
    r.send({ event: 'pusher:subscribe', data: { channel: `private-raw-${N}` } });
    const err = await r.waitFrame(deadline, (f) => (f.event === 'pusher:subscription_error' || f.event === 'pusher:error'), 'an error for a private subscribe without auth');
    detail.private_subscribe_without_auth = err.text;
  } finally {
    r.end();
  }
});

closeAll();
const ok = checks.length > 0 && checks.every((c) => c.ok);
finish({ ok, checks, skipped, ...base(), ms: Date.now() - started }, ok ? 0 : 1);
