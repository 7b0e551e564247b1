// The SSE transport (GET /sse + POST /publish) and the WebSocket -> SSE fallback.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { bytes, hex, makeClient, mixed, mixedShape, range, recorder, shape, sleep, startGateway, startProxy, waitFor } from './helpers.mjs';

let gw;
const clients = [];
const proxies = [];
function client(url, options) {
  const c = makeClient(url, options);
  clients.push(c);
  return c;
}

before(async () => {
  gw = await startGateway({ env: { RINGCAST_WEBSOCKET__HEARTBEAT_INTERVAL_MS: '400' } });
});

after(async () => {
  for (const c of clients) c.close();
  for (const p of proxies) await p.close();
  await gw?.stop();
});

test('sse: messages arrive, publish goes through POST /publish, heartbeats keep it open', async () => {
  const a = client(gw.http, { transports: ['sse'], heartbeatTimeoutMs: 300 });
  const b = client(gw.url);
  const lost = [];
  a.on('disconnected', (d) => lost.push(d));
  const ra = recorder(a, 'sse.room');
  await Promise.all([a.connect(), b.connect()]);
  assert.equal(a.transport, 'sse');
  const info = await ra.sub.ready;
  assert.equal(info.recovered, false);
  const acks = [];
  for (let n = 1; n <= 5; n++) acks.push(await a.publish('sse.room', { n, text: 'line1\nline2' }));
  assert.deepEqual(acks.map((x) => x.offset), range(1, 5));
  assert.ok(acks.every((x) => x.epoch === info.epoch));
  await b.publish('sse.room', { n: 6 });
  await waitFor(() => ra.msgs.length === 6, 3000, 'six messages');
  assert.deepEqual(ra.offsets(), range(1, 6));
  assert.deepEqual(ra.msgs[0].data, { n: 1, text: 'line1\nline2' });
  await assert.rejects(a.presence('sse.room'), (e) => e.code === 'unsupported_transport');
  await assert.rejects(a.event('sse.room', 1), (e) => e.code === 'unsupported_transport');
  await assert.rejects(a.publish('sse.room', 'x'.repeat(62000)), (e) => e.code === 'too_large' && e.status === 413);
  // Idle for longer than heartbeatTimeoutMs: the `: hb` comments (every 400 ms) keep it open.
  await sleep(1200);
  assert.deepEqual(lost, []);
});

test('sse: adding and removing rooms restarts the stream without losing or repeating', async () => {
  const a = client(gw.http, { transports: ['sse'] });
  const b = client(gw.url);
  const r1 = recorder(a, 'sse.multi1');
  await Promise.all([a.connect(), b.connect()]);
  await r1.sub.ready;
  let r2;
  let r3;
  for (let i = 1; i <= 30; i++) {
    if (i === 8) r2 = recorder(a, 'sse.multi2');
    if (i === 16) r3 = recorder(a, 'sse.multi3');
    if (i === 22) await r3.sub.unsubscribe();
    await b.publish('sse.multi1', { i });
  }
  await r2.sub.ready;
  await b.publish('sse.multi2', 'x');
  await waitFor(() => r1.msgs.length === 30 && r2.msgs.length === 1, 5000, 'all messages');
  assert.deepEqual(r1.offsets(), range(1, 30));
  assert.deepEqual(r2.offsets(), [1]);
});

test('sse: resume after reconnects during a burst: recovered, every offset once', async () => {
  const a = client(gw.http, { transports: ['sse'] });
  const b = client(gw.url);
  const failed = [];
  a.on('recoveryFailed', (i) => failed.push(i));
  const subs = [];
  const ra = recorder(a, 'sse.resume', { onSubscribed: (i) => subs.push(i) });
  await Promise.all([a.connect(), b.connect()]);
  await ra.sub.ready;
  for (let i = 1; i <= 30; i++) {
    if (i === 10 || i === 20) a.reconnect();
    await b.publish('sse.resume', { i });
  }
  await waitFor(() => ra.msgs.length >= 30 && a.state === 'open', 5000, 'thirty');
  await sleep(100);
  assert.deepEqual(ra.offsets(), range(1, 30));
  assert.deepEqual(failed, []);
  assert.ok(subs.length >= 3 && subs.slice(1).every((s) => s.resumed && s.recovered), JSON.stringify(subs));
});

test('sse: binary messages arrive (bin, base64) in one offset order with JSON, also across reconnects', async () => {
  const a = client(gw.http, { transports: ['sse'] });
  const b = client(gw.url);
  const failed = [];
  const gaps = [];
  a.on('recoveryFailed', (i) => failed.push(i));
  a.on('gap', (g) => gaps.push(g));
  const ra = recorder(a, 'sse.bin');
  await Promise.all([a.connect(), b.connect()]);
  await ra.sub.ready;
  const all = Uint8Array.from({ length: 256 }, (_, i) => 255 - i);
  await b.publishBinary('sse.bin', all);
  await b.publish('sse.bin', { n: 2 });
  await b.publishBinary('sse.bin', new Uint8Array(0));
  await b.publishBinary('sse.bin', bytes(4));
  await waitFor(() => ra.msgs.length === 4, 3000, 'four');
  assert.deepEqual(shape(ra.msgs), [
    { offset: 1, bin: hex(all) },
    { offset: 2, data: { n: 2 } },
    { offset: 3, bin: '' },
    { offset: 4, bin: hex(bytes(4)) },
  ]);
  // There is no binary HTTP publish.
  await assert.rejects(a.publishBinary('sse.bin', bytes(1)), (e) => e.code === 'unsupported_transport');
  // Reconnects during a mixed burst: the resume replays binary messages too.
  for (let n = 5; n <= 24; n++) {
    if (n === 10 || n === 17) a.reconnect();
    await mixed(b, 'sse.bin', n);
  }
  await waitFor(() => ra.msgs.length >= 24 && a.state === 'open', 5000, 'twenty-four');
  await sleep(100);
  assert.deepEqual(shape(ra.msgs.slice(4)), range(5, 24).map(mixedShape));
  assert.deepEqual(failed, []);
  assert.deepEqual(gaps, []);
});

test('fallback: WebSocket refused by a proxy -> SSE, which receives and publishes', async () => {
  const proxy = await startProxy(gw.port, { refusePaths: ['/ws'] });
  proxies.push(proxy);
  const a = client(proxy.url); // default transports: websocket, sse, poll
  const lost = [];
  a.on('disconnected', (d) => lost.push(d));
  const ra = recorder(a, 'fallback.sse');
  await a.connect();
  assert.equal(a.transport, 'sse');
  assert.ok(proxy.refused.includes('/ws'));
  assert.equal(lost[0].transport, 'websocket');
  assert.equal(lost[0].wasOpen, false);
  await ra.sub.ready;
  const ack = await a.publish('fallback.sse', 'via POST');
  assert.equal(ack.offset, 1);
  await waitFor(() => ra.msgs.length === 1, 3000, 'the message');
  assert.equal(ra.msgs[0].data, 'via POST');
  // WebSocket is configured but not in use: a binary publish cannot go out.
  await assert.rejects(a.publishBinary('fallback.sse', Uint8Array.of(1)), (e) => e.code === 'unsupported_transport');
});
