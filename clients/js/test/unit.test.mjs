// Unit tests: backoff math (bounds, full jitter), the SSE parser, options and validation, the
// binary envelopes and base64.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decodeBinaryMsg, encodeBinaryPublish, fromBase64, messageBytes } from '../dist/binary.js';
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

test('binary publish envelope: the bytes of protocol §9.9', () => {
  const wire = encodeBinaryPublish(7, 'game.1', Uint8Array.of(0xde, 0xad, 0xbe, 0xef));
  assert.equal(Buffer.from(wire).toString('hex'), '010100000000000000070667616d652e31deadbeef');
  // Ids above 2^32 keep their high half; an empty payload is just the envelope.
  const big = encodeBinaryPublish(2 ** 40 + 5, 'r', new Uint8Array(0));
  assert.equal(Buffer.from(big).toString('hex'), '0101000001000000000501' + '72');
});

test('binary msg envelope: decoded (payload a view), malformed ones refused', () => {
  const frame = (room, epoch, offset, data) => {
    const head = Buffer.alloc(2 + room.length + 1 + epoch.length + 8);
    let at = 0;
    head[at++] = 1;
    head[at++] = room.length;
    at += head.write(room, at, 'latin1');
    head[at++] = epoch.length;
    at += head.write(epoch, at, 'latin1');
    head.writeBigUInt64BE(BigInt(offset), at);
    return new Uint8Array(Buffer.concat([head, Buffer.from(data)]));
  };
  const m = decodeBinaryMsg(frame('game.1', '7f3a9c2e51d04b8a', 2 ** 53 - 1, [0, 255, 0]));
  assert.deepEqual({ ...m, data: [...m.data] }, { room: 'game.1', epoch: '7f3a9c2e51d04b8a', offset: 2 ** 53 - 1, data: [0, 255, 0] });
  assert.deepEqual([...decodeBinaryMsg(frame('r', 'e', 3, [])).data], []);
  const good = frame('room', 'ep', 1, [9]);
  for (let cut = 0; cut < good.length - 1; cut++) {
    assert.equal(decodeBinaryMsg(good.subarray(0, cut)), undefined, `cut at ${cut}`);
  }
  assert.equal(decodeBinaryMsg(Uint8Array.of(2, 1, 0x72, 1, 0x65, 0, 0, 0, 0, 0, 0, 0, 1)), undefined, 'unknown kind');
  assert.equal(decodeBinaryMsg(Uint8Array.of(1, 1, 0xff, 1, 0x65, 0, 0, 0, 0, 0, 0, 0, 1)), undefined, 'room not UTF-8');
  // What `ws` and browsers hand over.
  const ab = new ArrayBuffer(3);
  assert.equal(messageBytes(ab).length, 3);
  assert.deepEqual([...messageBytes(Buffer.from([1, 2, 3]).subarray(1))], [2, 3]);
  assert.deepEqual([...messageBytes([Buffer.from([1]), Buffer.from([2, 3])])], [1, 2, 3]);
  assert.equal(messageBytes('text'), undefined);
});

test('base64 of bin: every length decodes like Buffer, invalid text is refused', () => {
  for (let len = 0; len < 70; len++) {
    const data = Buffer.from(Array.from({ length: len }, (_, i) => (i * 97 + len) & 0xff));
    assert.deepEqual(Buffer.from(fromBase64(data.toString('base64'))), data, `length ${len}`);
  }
  assert.deepEqual([...fromBase64('AP8A')], [0, 255, 0]);
  for (const bad of ['A', 'AP8', '****', 'AP8A=', 'A===', 'AB=C', 'QUJ\n', 'QU-_', 'QUJé']) {
    assert.equal(fromBase64(bad), undefined, JSON.stringify(bad));
  }
});
