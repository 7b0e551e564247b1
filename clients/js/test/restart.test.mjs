// Reconnection across a gateway restart on the same port: the 1001 close with its
// reconnect_after_ms hint, publishes queued while the gateway is down, and resume with
// `since` after the embedded broker lost its history (new epoch) surfaced as recoveryFailed.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { freePort, makeClient, recorder, sleep, startGateway, waitFor } from './helpers.mjs';

const gateways = [];
const clients = [];

after(async () => {
  for (const c of clients) c.close();
  for (const g of gateways) await g.stop();
});

test('gateway restart: 1001 hint honoured, queued publish delivered, recovered:false surfaced', async () => {
  const port = await freePort();
  const env = { RINGCAST_SHUTDOWN__DRAIN_MS: '300', RINGCAST_SHUTDOWN__RECONNECT_HINT_MAX_MS: '300' };
  const gw1 = await startGateway({ port, env });
  gateways.push(gw1);
  const a = makeClient(gw1.url);
  clients.push(a);
  const lost = [];
  const failed = [];
  const subscribed = [];
  a.on('disconnected', (d) => lost.push({ ...d, at: Date.now() }));
  a.on('recoveryFailed', (i) => failed.push(i));
  const states = [];
  a.onState((s) => states.push(s));
  const ra = recorder(a, 'restart.room', { onSubscribed: (i) => subscribed.push(i) });
  await a.connect();
  const first = await ra.sub.ready;
  for (let n = 1; n <= 5; n++) await a.publish('restart.room', { n });
  await waitFor(() => ra.msgs.length === 5, 3000, 'five messages');

  // SIGTERM: the gateway drains, closing each client with 1001 {"reconnect_after_ms":N}.
  const exit = gw1.stop('SIGTERM');
  await waitFor(() => lost.length >= 1, 5000, 'the 1001 close');
  assert.equal(lost[0].code, 1001);
  const hint = JSON.parse(lost[0].reason).reconnect_after_ms;
  assert.ok(Number.isInteger(hint) && hint >= 0 && hint <= 300, `hint ${lost[0].reason}`);
  assert.equal(lost[0].retryInMs, hint, 'the client waits exactly the hinted delay');
  assert.equal((await exit).code, 0, 'drained and exited cleanly');

  // Down: publishes wait in the offline queue.
  assert.notEqual(a.state, 'open');
  const queued = a.publish('restart.room', { n: 'queued' });
  await sleep(200);

  const gw2 = await startGateway({ port, env });
  gateways.push(gw2);
  const ack = await queued;
  await waitFor(() => failed.length === 1, 5000, 'recoveryFailed');
  assert.equal(failed[0].room, 'restart.room');
  assert.deepEqual(failed[0].previous, { epoch: first.epoch, offset: 5 });
  assert.notEqual(failed[0].epoch, first.epoch, 'the restarted broker has a new epoch');
  assert.equal(ack.epoch, failed[0].epoch);
  const resumed = subscribed.at(-1);
  assert.equal(resumed.recovered, false);
  assert.equal(resumed.resumed, true);
  assert.equal(a.transport, 'websocket', 'a restart does not push the client to another transport');

  // Live delivery continues in the new epoch.
  const ack2 = await a.publish('restart.room', { n: 'after' });
  await waitFor(() => ra.msgs.some((m) => m.offset === ack2.offset && m.epoch === ack2.epoch), 3000, 'live message');
  assert.deepEqual(a.position('restart.room'), { epoch: ack2.epoch, offset: ack2.offset });
  assert.deepEqual(states.slice(0, 3), ['connecting', 'open', 'reconnecting']);
  assert.equal(states.at(-1), 'open');
});
