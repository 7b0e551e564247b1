// Browser awareness with stand-ins for `window` and `document` (this file runs in its own
// process): `online` and a page becoming visible reconnect at once instead of waiting out the
// backoff; the listeners go away on close().
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { freePort, makeClient, sleep, waitFor } from './helpers.mjs';

test('online / visibilitychange reconnect at once; listeners removed on close', async () => {
  const win = new EventTarget();
  const doc = new EventTarget();
  doc.visibilityState = 'hidden';
  globalThis.window = win;
  globalThis.document = doc;
  const realRandom = Math.random;
  Math.random = () => 0.99; // backoff delays close to the 5 s ceiling
  try {
    const port = await freePort(); // nothing listens: every attempt fails
    const c = makeClient(`ws://127.0.0.1:${port}`, {
      transports: ['websocket'],
      backoff: { minMs: 5000, maxMs: 5000, resetAfterMs: 1000 },
    });
    const attempts = [];
    c.on('disconnected', (d) => attempts.push(d));
    c.connect();
    await waitFor(() => attempts.length === 1, 3000, 'the first failed attempt');
    assert.ok(attempts[0].retryInMs >= 4900, `backing off ${attempts[0].retryInMs} ms`);
    await sleep(100);
    assert.equal(attempts.length, 1, 'waiting out the backoff');

    win.dispatchEvent(new Event('online'));
    await waitFor(() => attempts.length === 2, 1000, 'an attempt right after online');

    doc.dispatchEvent(new Event('visibilitychange')); // still hidden: nothing
    await sleep(100);
    assert.equal(attempts.length, 2);
    doc.visibilityState = 'visible';
    doc.dispatchEvent(new Event('visibilitychange'));
    await waitFor(() => attempts.length === 3, 1000, 'an attempt right after the page became visible');

    c.close();
    assert.equal(c.state, 'closed');
    win.dispatchEvent(new Event('online'));
    await sleep(100);
    assert.equal(attempts.length, 3, 'no listener left after close()');
  } finally {
    Math.random = realRandom;
    delete globalThis.window;
    delete globalThis.document;
  }
});
