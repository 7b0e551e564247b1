// Sends one malformed y-protocols message on a raw WebSocket and reports what came back, for a
// Rust test to assert on (the gateway must neither crash nor keep a broken document).
//
//   node yjs-bad.mjs --url 'ws://127.0.0.1:PORT/yjs/ROOM?token=JWT' [--hex 0002 05ffffffffff] [--wait-ms 2000]
//   node yjs-bad.mjs --url ws://127.0.0.1:PORT/yjs --room ROOM [--token JWT] ...
//
// With --room, the URL is built as y-websocket builds it: <url>/<room>?token=<token>; without it,
// --url is used as it is. The default message is [0, 2, 5, 255, 255, 255, 255, 255]: type 0
// (sync), sub-type 2 (update), a length of 5 and five bytes that are not a valid Yjs update.
// --hex replaces it (hex digits; spaces allowed).
//
// The message is sent as soon as the connection is open, then every frame received in the next
// --wait-ms (2 s) is recorded. The last stdout line:
//   {"opened":true,"close_code":N|null,"close_reason":"...","frames":["0000...", "text:..."],"ms":...}
// frames: each binary frame as lowercase hex, each text frame as "text:" + its text, in order of
// arrival (frames received before the send are included: y-websocket servers send sync step 1
// on open). close_code is null when the connection was still open at the end. When the upgrade
// is refused, "opened" is false and "http_status" holds the status. Always exits 0 (also on a
// refused or failed connection, with "error" set), except for bad arguments (exit 2).

import WebSocket from 'ws';
import { finish, makeLog, parseArgs } from './common.mjs';

const log = makeLog('yjs-bad');
const started = Date.now();

let opts;
try {
  opts = parseArgs(process.argv.slice(2), {
    url: { type: 'string', default: '' },
    room: { type: 'string', default: '' },
    token: { type: 'string', default: '' },
    hex: { type: 'string', default: '0002 05 ffffffffff' },
    'wait-ms': { type: 'int', default: 2000 },
  });
} catch (e) {
  finish({ error: `bad arguments: ${e.message}` }, 2);
}
const hex = opts.hex.replace(/\s+/g, '');
if (!opts.url || !/^([0-9a-fA-F]{2})+$/.test(hex) || opts['wait-ms'] < 0 || opts['wait-ms'] > 30000) {
  finish({ error: 'bad arguments: --url is required, --hex must be pairs of hex digits, --wait-ms 0..30000' }, 2);
}
const payload = Buffer.from(hex, 'hex');
let url = opts.url;
if (opts.room) {
  url = `${url.replace(/\/+$/, '')}/${opts.room}${opts.token ? `?token=${encodeURIComponent(opts.token)}` : ''}`;
}

const CONNECT_TIMEOUT_MS = 5000;
const out = { opened: false, close_code: null, close_reason: '', frames: [], sent: payload.toString('hex') };
let sentAt = 0;

function done(extra = {}) {
  clearTimeout(connectTimer);
  try {
    ws.terminate();
  } catch {
    // already gone
  }
  finish({ ...out, ...extra, ms: Date.now() - started }, 0);
}

const ws = new WebSocket(url, { handshakeTimeout: CONNECT_TIMEOUT_MS });
// The whole script is bounded: connecting (5 s) plus the wait after the send.
const connectTimer = setTimeout(() => done({ error: `no connection within ${CONNECT_TIMEOUT_MS} ms` }), CONNECT_TIMEOUT_MS + 500);

ws.on('unexpected-response', (_req, res) => {
  out.http_status = res.statusCode;
  res.resume();
  done({ error: `upgrade refused with HTTP ${res.statusCode}` });
});
ws.on('open', () => {
  out.opened = true;
  clearTimeout(connectTimer);
  ws.send(payload, { binary: true });
  sentAt = Date.now();
  log(`sent ${payload.toString('hex')} to ${url.replace(/token=[^&]*/, 'token=…')}`);
  setTimeout(() => done(), opts['wait-ms']);
});
ws.on('message', (data, isBinary) => {
  const buf = Buffer.isBuffer(data) ? data : Buffer.concat(Array.isArray(data) ? data : [Buffer.from(data)]);
  out.frames.push(isBinary ? buf.toString('hex') : `text:${buf.toString('utf8')}`);
});
ws.on('close', (code, reason) => {
  out.close_code = code;
  out.close_reason = reason.toString('utf8');
  if (sentAt) out.closed_after_ms = Date.now() - sentAt;
  done();
});
ws.on('error', (e) => {
  // 'close' follows an error on an opened socket; before opening, nothing else will come.
  if (!out.opened) done({ error: `connection failed: ${e.message}` });
  else out.error = e.message;
});
