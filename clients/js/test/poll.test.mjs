// The long-poll transport (GET /poll + POST /publish) and the WebSocket -> SSE -> poll fallback.
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
  gw = await startGateway({ env: { RINGCAST_WEBSOCKET__LONG_POLL_HOLD_MS: '800' } });
});

after(async () => {
  for (const c of clients) c.close();
  for (const p of proxies) await p.close();
  await gw?.stop();
});

test('poll: messages arrive in order across held polls; publish goes through POST /publish', async () => {
  const a = client(gw.http, { transports: ['poll'], pollTimeoutMs: 5000 });
  const b = client(gw.url);
  const lost = [];
  a.on('disconnected', (d) => lost.push(d));
  const ra = recorder(a, 'poll.room');
  await Promise.all([a.connect(), b.connect()]);
  assert.equal(a.transport, 'poll');
  const info = await ra.sub.ready;
  assert.equal(info.offset, 0);
  const acks = [];
  for (let n = 1; n <= 5; n++) acks.push(await a.publish('poll.room', { n }));
  assert.deepEqual(acks.map((x) => x.offset), range(1, 5));
  await waitFor(() => ra.msgs.length === 5, 3000, 'five');
  // Nothing for longer than the hold (800 ms): the empty answers are polled again.
  await sleep(1200);
  for (let n = 6; n <= 10; n++) await b.publish('poll.room', { n });
  await waitFor(() => ra.msgs.length === 10, 3000, 'ten');
  assert.deepEqual(ra.offsets(), range(1, 10));
  assert.deepEqual(ra.msgs.map((m) => m.data.n), range(1, 10));
  // A room added while a poll is held is picked up at once.
  const r2 = recorder(a, 'poll.room2');
  const ready2 = await r2.sub.ready;
  assert.equal(ready2.offset, 0);
  await b.publish('poll.room2', 'two');
  await waitFor(() => r2.msgs.length === 1, 3000, 'second room');
  assert.deepEqual(lost, []);
  await assert.rejects(a.history('poll.room'), (e) => e.code === 'unsupported_transport');
});

test('poll: reconnects during a burst resume from the tracked position, every offset once', async () => {
  const a = client(gw.http, { transports: ['poll'] });
  const b = client(gw.url);
  const failed = [];
  a.on('recoveryFailed', (i) => failed.push(i));
  const ra = recorder(a, 'poll.resume');
  await Promise.all([a.connect(), b.connect()]);
  await ra.sub.ready;
  for (let i = 1; i <= 30; i++) {
    if (i === 10 || i === 20) a.reconnect();
    await b.publish('poll.resume', { i });
  }
  await waitFor(() => ra.msgs.length >= 30 && a.state === 'open', 5000, 'thirty');
  await sleep(100);
  assert.deepEqual(ra.offsets(), range(1, 30));
  assert.deepEqual(failed, []);
});

test('poll: binary messages arrive (bin, base64) in one offset order with JSON, also across reconnects', async () => {
  const a = client(gw.http, { transports: ['poll'], pollTimeoutMs: 5000 });
  const b = client(gw.url);
  const failed = [];
  const gaps = [];
  a.on('recoveryFailed', (i) => failed.push(i));
  a.on('gap', (g) => gaps.push(g));
  const ra = recorder(a, 'poll.bin');
  await Promise.all([a.connect(), b.connect()]);
  await ra.sub.ready;
  const all = Uint8Array.from({ length: 256 }, (_, i) => i);
  await b.publishBinary('poll.bin', all);
  await b.publish('poll.bin', { n: 2 });
  await b.publishBinary('poll.bin', new Uint8Array(0));
  await b.publishBinary('poll.bin', bytes(4));
  await waitFor(() => ra.msgs.length === 4, 3000, 'four');
  assert.deepEqual(shape(ra.msgs), [
    { offset: 1, bin: hex(all) },
    { offset: 2, data: { n: 2 } },
    { offset: 3, bin: '' },
    { offset: 4, bin: hex(bytes(4)) },
  ]);
  await assert.rejects(a.publishBinary('poll.bin', bytes(1)), (e) => e.code === 'unsupported_transport');
  for (let n = 5; n <= 24; n++) {
    if (n === 10 || n === 17) a.reconnect();
    await mixed(b, 'poll.bin', n);
  }
  await waitFor(() => ra.msgs.length >= 24 && a.state === 'open', 5000, 'twenty-four');
  await sleep(100);
  assert.deepEqual(shape(ra.msgs.slice(4)), range(5, 24).map(mixedShape));
  assert.deepEqual(failed, []);
  assert.deepEqual(gaps, []);
});

test('fallback: WebSocket and SSE refused by a proxy -> long-poll', async () => {
  const proxy = await startProxy(gw.port, { refusePaths: ['/ws', '/sse'] });
  proxies.push(proxy);
  const a = client(proxy.url);
  const tried = [];
  a.on('disconnected', (d) => tried.push(d.transport));
  const ra = recorder(a, 'fallback.poll');
  await a.connect();
  assert.equal(a.transport, 'poll');
  assert.deepEqual(tried, ['websocket', 'sse']);
  await ra.sub.ready;
  const ack = await a.publish('fallback.poll', 'via POST');
  assert.equal(ack.offset, 1);
  await waitFor(() => ra.msgs.length === 1, 3000, 'the message');
});
