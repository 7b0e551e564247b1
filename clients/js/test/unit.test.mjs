// Unit tests: backoff math (bounds, full jitter), the SSE parser, options and validation.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { backoffCeiling, backoffDelay, isValidRoom, RingcastClient, RingcastError, SseParser } from '../dist/index.js';

const P = { minMs: 500, maxMs: 30000 };

test('backoff ceiling doubles from minMs and is capped at maxMs', () => {
  assert.deepEqual(
    [0, 1, 2, 3, 4, 5, 6, 7].map((n) => backoffCeiling(n, P)),
    [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000],
  );
  assert.equal(backoffCeiling(1000, P), 30000, 'no overflow to Infinity/NaN');
  assert.equal(backoffCeiling(-3, P), 500, 'negative attempts count as 0');
});

test('backoff delay is within [0, ceiling] at the extremes of the random source', () => {
  for (let n = 0; n < 12; n++) {
    const c = backoffCeiling(n, P);
    assert.equal(backoffDelay(n, P, () => 0), 0);
    assert.equal(backoffDelay(n, P, () => 0.9999999999), c);
    assert.equal(backoffDelay(n, P, () => 0.5), Math.floor(0.5 * (c + 1)));
  }
});

test('backoff has full jitter: uniform spread over the whole [0, ceiling] range', () => {
  const samples = 4000;
  for (const n of [0, 3, 10]) {
    const c = backoffCeiling(n, P);
    const buckets = new Array(10).fill(0);
    let sum = 0;
    for (let i = 0; i < samples; i++) {
      const d = backoffDelay(n, P);
      assert.ok(d >= 0 && d <= c && Number.isInteger(d), `delay ${d} outside [0, ${c}]`);
      sum += d;
      buckets[Math.min(9, Math.floor((d / (c + 1)) * 10))]++;
    }
    // Every tenth of the range is hit (expected 400 each; 250 is > 7 sigma below).
    for (const b of buckets) assert.ok(b > 250, `uneven spread for attempt ${n}: ${buckets}`);
    const mean = sum / samples;
    assert.ok(Math.abs(mean - c / 2) < c * 0.05, `mean ${mean} far from ${c / 2}`);
  }
});

test('SSE parser: events, multi-line data, comments, retry, CRLF split across chunks', () => {
  const got = [];
  const comments = [];
  let retry;
  const p = new SseParser({
    message: (m) => got.push(m),
    comment: (c) => comments.push(c),
    retry: (ms) => {
      retry = ms;
    },
  });
  const text =
    'event: hello\r\ndata: {"ev":"hello"}\r\n\r\n: hb\n\nevent: msg\nid: r|e:1\ndata: {"a":\ndata: 1}\n\nretry: 1234\n\n' +
    'event: msg\rdata: {"b":2}\r\r';
  // Feed it one character at a time: every split point must work.
  for (const ch of text) p.push(ch);
  assert.deepEqual(got, [
    { event: 'hello', data: '{"ev":"hello"}', id: undefined },
    { event: 'msg', data: '{"a":\n1}', id: 'r|e:1' },
    { event: 'msg', data: '{"b":2}', id: undefined },
  ]);
  assert.deepEqual(comments, ['hb']);
  assert.equal(retry, 1234);
  assert.deepEqual(JSON.parse(got[1].data), { a: 1 });
});

test('room validation and option checks', () => {
  assert.ok(isValidRoom('chat.user:42@team/a=b+c_d'));
  assert.ok(!isValidRoom(''));
  assert.ok(!isValidRoom('a b'));
  assert.ok(!isValidRoom('x'.repeat(201)));
  assert.throws(() => new RingcastClient({}), TypeError);
  assert.throws(() => new RingcastClient({ url: 'ftp://x' }), TypeError);
  assert.throws(() => new RingcastClient({ url: 'ws://x', transports: ['carrier-pigeon'] }), TypeError);
  const c = new RingcastClient({ url: 'ws://127.0.0.1:1' });
  assert.equal(c.state, 'idle');
  assert.throws(() => c.subscribe('bad room', () => {}), (e) => e instanceof RingcastError && e.code === 'bad_room');
  return assert.rejects(c.publish('chat.a', null), (e) => e.code === 'bad_request');
});
