// The WebSocket transport against the real gateway: pub/sub with acks, ordering between two
// clients, resume after a dropped connection (no gap, no duplicate), heartbeat timeout, the
// offline queue, presence/history/events, token refresh and auth failures.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  bytes,
  freePort,
  hex,
  jwt,
  makeClient,
  mixed,
  mixedShape,
  range,
  recorder,
  shape,
  sleep,
  startGateway,
  startProxy,
  waitFor,
  WebSocketNoDeflate,
} from './helpers.mjs';

const SECRET = 'js-sdk-test-secret-0123456789-0123456789';
let gw;
const clients = [];
const proxies = [];

function client(url, options) {
  const c = makeClient(url, options);
  clients.push(c);
  return c;
}

before(async () => {
  gw = await startGateway({
    toml: `
[websocket]
heartbeat_interval_ms = 1000
[namespaces.doc]
anonymous = "publish"
presence = true
join_leave = true
[namespaces.auth]
[auth]
expiry_grace_ms = 500
[[auth.keys]]
alg = "HS256"
secret = "${SECRET}"
`,
  });
});

after(async () => {
  for (const c of clients) c.close();
  for (const p of proxies) await p.close();
  await gw?.stop();
});

test('connect, subscribe, publish with ack', async () => {
  const c = client(gw.url);
  const states = [];
  c.onState((s) => states.push(s));
  assert.equal(c.state, 'idle');
  await c.connect();
  assert.equal(c.state, 'open');
  assert.equal(c.transport, 'websocket');
  assert.match(c.clientId, /\S+/);
  const r = recorder(c, 'basic.room');
  const info = await r.sub.ready;
  assert.equal(info.recovered, false);
  assert.equal(info.resumed, false);
  assert.equal(info.offset, 0);
  const ack = await c.publish('basic.room', { text: 'hi', n: 1 });
  assert.equal(ack.offset, 1);
  assert.equal(ack.epoch, info.epoch);
  await waitFor(() => r.msgs.length === 1, 3000, 'the message');
  assert.deepEqual(r.msgs[0], { data: { text: 'hi', n: 1 }, room: 'basic.room', epoch: info.epoch, offset: 1 });
  assert.deepEqual(c.position('basic.room'), { epoch: info.epoch, offset: 1 });
  assert.deepEqual(states, ['connecting', 'open']);
  await r.sub.unsubscribe();
  assert.equal(r.sub.active, false);
  await c.publish('basic.room', 'after');
  await sleep(100);
  assert.equal(r.msgs.length, 1, 'nothing after unsubscribe');
});

test('two clients see each other\'s messages in the same order', async () => {
  const a = client(gw.url);
  const b = client(gw.url);
  const ra = recorder(a, 'order.room');
  const rb = recorder(b, 'order.room');
  a.connect();
  b.connect();
  await Promise.all([ra.sub.ready, rb.sub.ready]);
  const N = 15;
  const acks = await Promise.all([
    ...range(1, N).map((i) => a.publish('order.room', { from: 'a', i })),
    ...range(1, N).map((i) => b.publish('order.room', { from: 'b', i })),
  ]);
  await waitFor(() => ra.msgs.length === 2 * N && rb.msgs.length === 2 * N, 5000, 'all messages on both');
  assert.deepEqual(ra.offsets(), range(1, 2 * N));
  assert.deepEqual(rb.offsets(), range(1, 2 * N));
  assert.deepEqual(ra.msgs, rb.msgs, 'same messages in the same order on both clients');
  for (const from of ['a', 'b']) {
    const seq = ra.msgs.filter((m) => m.data.from === from).map((m) => m.data.i);
    assert.deepEqual(seq, range(1, N), `publishes of ${from} keep their order`);
  }
  // Every ack names the offset its message got.
  for (const [k, ack] of acks.entries()) {
    const want = k < N ? { from: 'a', i: k + 1 } : { from: 'b', i: k - N + 1 };
    assert.deepEqual(ra.msgs[ack.offset - 1].data, want);
  }
});

test('server errors reject the publish; invalid input is refused locally', async () => {
  const c = client(gw.url);
  await c.connect();
  await assert.rejects(c.publish('err.room', 'x'.repeat(62000)), (e) => e.code === 'too_large' && e.room === 'err.room');
  await assert.rejects(c.publish('bad room', 1), (e) => e.code === 'bad_room');
  await assert.rejects(c.presence('err.room'), (e) => e.code === 'not_enabled');
  const sub = c.subscribe('auth.private', () => {});
  const errors = [];
  c.on('error', (e) => errors.push(e.code));
  await assert.rejects(sub.ready, (e) => e.code === 'unauthorized');
  assert.equal(sub.active, false);
  assert.deepEqual(errors, ['unauthorized']);
  // The connection stays usable.
  const ack = await c.publish('err.room', 'fine');
  assert.equal(ack.offset, 1);
});

test('presence, join/leave, ephemeral events and history', async () => {
  const a = client(gw.url);
  const b = client(gw.url);
  const joins = [];
  const leaves = [];
  const events = [];
  let members;
  const ra = recorder(a, 'doc.42', {
    presence: true,
    onJoin: (m) => joins.push(m.client),
    onLeave: (m) => leaves.push(m.client),
    onPresence: (list) => {
      members = list.map((m) => m.client).sort();
    },
  });
  await a.connect();
  await ra.sub.ready;
  await waitFor(() => members?.length === 1, 3000, 'own presence');
  const rb = recorder(b, 'doc.42', { onEvent: (data, room) => events.push({ data, room }) });
  await b.connect();
  await rb.sub.ready;
  await waitFor(() => joins.length === 1, 3000, 'join');
  assert.deepEqual(joins, [b.clientId]);
  assert.deepEqual(members, [a.clientId, b.clientId].sort());
  assert.deepEqual((await b.presence('doc.42')).map((m) => m.client).sort(), [a.clientId, b.clientId].sort());

  await a.event('doc.42', { typing: true });
  await waitFor(() => events.length === 1, 3000, 'the ephemeral event');
  assert.deepEqual(events, [{ data: { typing: true }, room: 'doc.42' }]);

  for (const n of [1, 2, 3]) await a.publish('doc.42', { n });
  const all = await b.history('doc.42');
  assert.deepEqual(all.messages.map((m) => m.data.n), [1, 2, 3]);
  const tail = await b.history('doc.42', { since: { epoch: all.epoch, offset: 1 }, limit: 10 });
  assert.equal(tail.recovered, true);
  assert.deepEqual(tail.messages.map((m) => m.offset), [2, 3]);

  await rb.sub.unsubscribe();
  await waitFor(() => leaves.length === 1, 3000, 'leave');
  assert.deepEqual(leaves, [b.clientId]);
  assert.deepEqual(members, [a.clientId]);
  await assert.rejects(b.event('doc.42', 1).then(() => sleep(200)).then(() => b.presence('doc.42')), (e) => e.code === 'not_subscribed');
});

// Binary messages, with and without permessage-deflate on the subscribers' connections (every
// browser negotiates it).
for (const deflate of [false, true]) {
  const tag = `permessage-deflate ${deflate ? 'on' : 'off'}`;
  const ws = deflate ? {} : { WebSocket: WebSocketNoDeflate };
  const room = `bin.room.${deflate ? 'z' : 'p'}`;
  const resume = `bin.resume.${deflate ? 'z' : 'p'}`;

  test(`binary (${tag}): publishBinary reaches subscribers as bytes, in one offset order with JSON; history decodes it`, async () => {
    const a = client(gw.url, ws);
    const b = client(gw.url, ws);
    const ra = recorder(a, room);
    const rb = recorder(b, room);
    await Promise.all([a.connect(), b.connect()]);
    const info = await ra.sub.ready;
    await rb.sub.ready;
    const all = Uint8Array.from({ length: 256 }, (_, i) => i);
    const acks = [];
    acks.push(await b.publishBinary(room, all));
    acks.push(await b.publish(room, { n: 2 }));
    acks.push(await b.publishBinary(room, new Uint8Array(0)));
    const mine = bytes(4);
    const pending = a.publishBinary(room, mine);
    mine.fill(7); // the payload was copied when publishBinary was called
    acks.push(await pending);
    acks.push(await b.publish(room, 'five'));
    assert.deepEqual(acks.map((x) => x.offset), range(1, 5));
    assert.ok(acks.every((x) => x.room === room && x.epoch === info.epoch));
    const want = [
      { offset: 1, bin: hex(all) },
      { offset: 2, data: { n: 2 } },
      { offset: 3, bin: '' },
      { offset: 4, bin: hex(bytes(4)) },
      { offset: 5, data: 'five' },
    ];
    await waitFor(() => ra.msgs.length === 5 && rb.msgs.length === 5, 3000, 'five messages on both');
    assert.deepEqual(shape(ra.msgs), want);
    assert.deepEqual(shape(rb.msgs), want);
    assert.deepEqual(ra.msgs[0], { data: null, room, epoch: info.epoch, offset: 1, binary: ra.msgs[0].binary });
    assert.ok(!('binary' in ra.msgs[1]), 'a JSON message has no binary');
    assert.deepEqual(a.position(room), { epoch: info.epoch, offset: 5 });

    const h = await b.history(room);
    assert.deepEqual(shape(h.messages), want);
    const tail = await b.history(room, { since: { epoch: info.epoch, offset: 2 }, limit: 2 });
    assert.equal(tail.recovered, true);
    assert.deepEqual(shape(tail.messages), want.slice(2, 4));

    await assert.rejects(a.publishBinary('bad room', bytes(1)), (e) => e.code === 'bad_room');
    await assert.rejects(a.publishBinary(room, [1, 2]), (e) => e.code === 'bad_request');
    await assert.rejects(a.publishBinary(room, new Uint8Array(62000)), (e) => e.code === 'too_large' && e.room === room);
    // The connection is still fine and the room's offsets went on.
    assert.equal((await a.publishBinary(room, Uint8Array.of(0xff))).offset, 6);
    await waitFor(() => ra.msgs.length === 6, 3000, 'the sixth');
    assert.deepEqual(shape(ra.msgs.slice(5)), [{ offset: 6, bin: 'ff' }]);
  });

  test(`binary (${tag}): resume after a dropped connection replays binary and JSON messages, every offset once`, async () => {
    const proxy = await startProxy(gw.port);
    proxies.push(proxy);
    const a = client(proxy.url, ws);
    const b = client(gw.url);
    const subscribed = [];
    const failed = [];
    const gaps = [];
    a.on('recoveryFailed', (i) => failed.push(i));
    a.on('gap', (g) => gaps.push(g));
    const ra = recorder(a, resume, { onSubscribed: (i) => subscribed.push(i) });
    await Promise.all([a.connect(), b.connect()]);
    await ra.sub.ready;
    for (let n = 1; n <= 6; n++) await mixed(b, resume, n);
    await waitFor(() => ra.msgs.length === 6, 3000, 'first 6');

    proxy.block(true);
    proxy.dropAll();
    await waitFor(() => a.state === 'reconnecting', 3000, 'reconnecting');
    for (let n = 7; n <= 14; n++) await mixed(b, resume, n); // missed while away
    const offline = a.publishBinary(resume, bytes(15)); // queued until the reconnect
    await sleep(150);
    proxy.block(false);
    assert.equal((await offline).offset, 15);
    await mixed(b, resume, 16);
    await waitFor(() => a.state === 'open' && ra.msgs.length === 16, 5000, 'the resume');
    await sleep(100);

    assert.deepEqual(shape(ra.msgs), range(1, 16).map(mixedShape));
    assert.equal(subscribed.length, 2);
    assert.deepEqual([subscribed[1].recovered, subscribed[1].resumed], [true, true]);
    assert.deepEqual(failed, []);
    assert.deepEqual(gaps, []);
  });
}

test('resume after a dropped connection (no restart): recovered, every offset exactly once', async () => {
  const proxy = await startProxy(gw.port);
  proxies.push(proxy);
  const a = client(proxy.url);
  const b = client(gw.url);
  const subscribed = [];
  const failed = [];
  const gaps = [];
  const lost = [];
  a.on('recoveryFailed', (i) => failed.push(i));
  a.on('gap', (g) => gaps.push(g));
  a.on('disconnected', (d) => lost.push(d));
  const ra = recorder(a, 'resume.room', { onSubscribed: (i) => subscribed.push(i) });
  await Promise.all([a.connect(), b.connect()]);
  await ra.sub.ready;
  for (let i = 1; i <= 10; i++) await b.publish('resume.room', { i });
  await waitFor(() => ra.msgs.length === 10, 3000, 'first 10');

  proxy.block(true);
  proxy.dropAll();
  await waitFor(() => a.state === 'reconnecting', 3000, 'reconnecting');
  for (let i = 11; i <= 20; i++) await b.publish('resume.room', { i }); // missed while away
  await sleep(150);
  proxy.block(false);
  await waitFor(() => a.state === 'open' && ra.msgs.length === 20, 5000, 'the resume');
  for (let i = 21; i <= 25; i++) await b.publish('resume.room', { i });
  await waitFor(() => ra.msgs.length === 25, 3000, 'live after resume');

  assert.deepEqual(ra.offsets(), range(1, 25));
  assert.deepEqual(ra.msgs.map((m) => m.data.i), range(1, 25));
  assert.equal(subscribed.length, 2);
  assert.deepEqual(
    { recovered: subscribed[1].recovered, resumed: subscribed[1].resumed, offset: subscribed[1].offset },
    { recovered: true, resumed: true, offset: 20 },
  );
  assert.deepEqual(failed, []);
  assert.deepEqual(gaps, []);
  assert.ok(lost[0].wasOpen, 'the first loss was of an open connection');
});

test('reconnect() during a publish burst: no gap, no duplicate', async () => {
  const a = client(gw.url);
  const b = client(gw.url);
  const failed = [];
  a.on('recoveryFailed', (i) => failed.push(i));
  const resumes = [];
  const ra = recorder(a, 'burst.room', { onSubscribed: (i) => resumes.push(i) });
  await Promise.all([a.connect(), b.connect()]);
  await ra.sub.ready;
  for (let i = 1; i <= 40; i++) {
    if (i === 10 || i === 25) a.reconnect();
    await b.publish('burst.room', { i });
  }
  await waitFor(() => ra.msgs.length >= 40 && a.state === 'open', 5000, 'all 40');
  await sleep(100);
  assert.deepEqual(ra.offsets(), range(1, 40));
  assert.deepEqual(failed, []);
  assert.equal(resumes.length, 3);
  assert.ok(resumes.slice(1).every((r) => r.recovered && r.resumed));
});

test('heartbeat timeout: a connection that went silent is replaced and resumed', async () => {
  const proxy = await startProxy(gw.port);
  proxies.push(proxy);
  const a = client(proxy.url, { heartbeatTimeoutMs: 600 });
  const b = client(gw.url);
  const lost = [];
  a.on('disconnected', (d) => lost.push(d));
  const ra = recorder(a, 'hb.room');
  await Promise.all([a.connect(), b.connect()]);
  await ra.sub.ready;
  await b.publish('hb.room', 1);
  await waitFor(() => ra.msgs.length === 1, 3000, 'first message');
  // Healthy but idle for longer than the timeout: the client's pings keep it alive.
  await sleep(900);
  assert.equal(lost.length, 0, 'no false heartbeat timeout on an idle healthy link');
  proxy.freeze(); // the link goes dead without a FIN
  await b.publish('hb.room', 2);
  await waitFor(() => lost.length === 1, 3000, 'the heartbeat timeout');
  assert.equal(lost[0].code, 4005);
  await waitFor(() => a.state === 'open' && ra.msgs.length === 2, 5000, 'the resume');
  assert.deepEqual(ra.offsets(), [1, 2]);
});

test('offline queue: publishes made while disconnected are sent after the reconnect', async () => {
  const proxy = await startProxy(gw.port);
  proxies.push(proxy);
  const a = client(proxy.url);
  const b = client(gw.url);
  const ra = recorder(a, 'queue.room');
  const rb = recorder(b, 'queue.room');
  await Promise.all([a.connect(), b.connect()]);
  await Promise.all([ra.sub.ready, rb.sub.ready]);
  proxy.block(true);
  proxy.dropAll();
  await waitFor(() => a.state === 'reconnecting', 3000, 'reconnecting');
  let settled = 0;
  const pubs = [1, 2, 3].map((n) => a.publish('queue.room', { n }).finally(() => settled++));
  await sleep(150);
  assert.equal(settled, 0, 'queued, not sent');
  proxy.block(false);
  const acks = await Promise.all(pubs);
  assert.deepEqual(acks.map((x) => x.offset), [1, 2, 3]);
  await waitFor(() => ra.msgs.length === 3 && rb.msgs.length === 3, 3000, 'delivery');
  assert.deepEqual(rb.msgs.map((m) => m.data.n), [1, 2, 3]);
  assert.deepEqual(ra.offsets(), [1, 2, 3]);
});

test('offline queue: bounded, and each queued publish times out', async () => {
  const port = await freePort(); // nothing listens there
  const c = client(`ws://127.0.0.1:${port}`, { offlineQueue: { max: 2, timeoutMs: 300 } });
  const states = [];
  c.onState((s) => states.push(s));
  const opened = c.connect();
  const started = Date.now();
  const p1 = c.publish('q.room', 1);
  const p2 = c.publish('q.room', 2);
  await assert.rejects(c.publish('q.room', 3), (e) => e.code === 'queue_full');
  await assert.rejects(p1, (e) => e.code === 'timeout');
  await assert.rejects(p2, (e) => e.code === 'timeout');
  const took = Date.now() - started;
  assert.ok(took >= 280 && took < 2000, `timed out after ${took} ms`);
  c.close();
  await assert.rejects(opened, (e) => e.code === 'closed');
  await assert.rejects(c.publish('q.room', 4), (e) => e.code === 'closed');
  assert.equal(states[0], 'connecting');
  assert.equal(states.at(-1), 'closed');
  assert.ok(!states.includes('open'));
});

test('token refresh: token_expiring -> provider -> refresh keeps the connection past exp', async () => {
  let calls = 0;
  const provider = async () => {
    calls++;
    const ttl = calls === 1 ? 2 : 600; // the first token expires at once: the server warns
    return jwt(
      { sub: 'u-1', exp: Math.floor(Date.now() / 1000) + ttl, ringcast: { subscribe: ['auth.*'], publish: ['auth.*'] } },
      SECRET,
    );
  };
  const c = client(gw.url, { token: provider });
  const refreshed = [];
  const lost = [];
  c.on('tokenRefreshed', (r) => refreshed.push(r));
  c.on('disconnected', (d) => lost.push(d));
  const r = recorder(c, 'auth.room');
  await c.connect();
  await r.sub.ready;
  await waitFor(() => refreshed.length === 1, 5000, 'refreshed');
  assert.equal(calls, 2);
  assert.ok(refreshed[0].expiresAt > Date.now() / 1000 + 500);
  await sleep(3200); // past the first token's exp + grace: no 4002
  assert.deepEqual(lost, []);
  assert.equal(c.state, 'open');
  await c.publish('auth.room', 'still here');
  await waitFor(() => r.msgs.length === 1, 3000, 'message');
});

test('a refused static token is not retried: closed with auth_failed', async () => {
  const bad = jwt({ sub: 'u-2', exp: Math.floor(Date.now() / 1000) + 600 }, 'wrong-secret-wrong-secret-wrong-secret');
  const c = client(gw.url, { token: bad });
  const errors = [];
  c.on('error', (e) => errors.push(e.code));
  await assert.rejects(c.connect(), (e) => e.code === 'auth_failed');
  assert.equal(c.state, 'closed');
  assert.deepEqual(errors, ['auth_failed']);
});
