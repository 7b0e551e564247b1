// Writes to or reads a y-websocket document (Y.Text 'text'), to check that the server keeps it,
// e.g. across a gateway restart.
//
//   node yjs-doc.mjs --url ws://127.0.0.1:PORT/yjs --room docs.readme [--token JWT] --mode write --text "hello"
//   node yjs-doc.mjs --url ws://127.0.0.1:PORT/yjs --room docs.readme [--token JWT] --mode read
//   common options: [--timeout-ms 20000] [--settle-ms 300]
//
// write: a provider syncs, appends --text to Y.Text 'text' and disconnects; then fresh providers
//   (each with a new, empty Y.Doc, so only the server can supply the content) connect to the
//   same room until one holds the writer's full text. The writer is gone by then, so no peer
//   can have answered in the server's place. Prints {"ok":true,"text":"<full text>","attempts":n}.
// read: a fresh provider syncs, waits --settle-ms more (a late update may still arrive), prints
//   {"text":"..."}.
// Exit 1 (with "error" in the JSON) on a timeout, a permanent close by the server or bad options.

import { finish, hardTimeout, makeLog, parseArgs, sleep, waitUntil } from './common.mjs';
import { connectDoc } from './yjs-common.mjs';

const log = makeLog('yjs-doc');
const started = Date.now();
let phase = 'parsing arguments';
let mode = '';
let attempts = 0;

function fail(err) {
  const base = mode === 'read' ? { text: null } : { ok: false, attempts };
  finish({ ...base, phase, error: `${phase}: ${err.message ?? err}`, ms: Date.now() - started }, 1);
}
process.on('uncaughtException', fail);
process.on('unhandledRejection', fail);

let opts;
try {
  opts = parseArgs(process.argv.slice(2), {
    url: { type: 'string', default: '' },
    room: { type: 'string', default: '' },
    token: { type: 'string', default: '' },
    mode: { type: 'string', default: '' },
    text: { type: 'string', default: '' },
    'timeout-ms': { type: 'int', default: 20000 },
    'settle-ms': { type: 'int', default: 300 },
  });
} catch (e) {
  finish({ ok: false, error: `bad arguments: ${e.message}` }, 1);
}
mode = opts.mode;
const argErrors = [];
if (!opts.url) argErrors.push('--url is required');
if (!opts.room) argErrors.push('--room is required');
if (mode !== 'read' && mode !== 'write') argErrors.push(`--mode must be read or write, got '${mode}'`);
if (mode === 'write' && opts.text.length === 0) argErrors.push('--mode write needs a non-empty --text');
if (opts['timeout-ms'] < 1000) argErrors.push('--timeout-ms must be at least 1000');
if (opts['settle-ms'] < 0 || opts['settle-ms'] > 10000) argErrors.push('--settle-ms must be 0..10000');
if (argErrors.length) finish({ ok: false, error: `bad arguments: ${argErrors.join('; ')}` }, 1);

const timeoutMs = opts['timeout-ms'];
hardTimeout(timeoutMs, () => (mode === 'read' ? { text: null, phase } : { ok: false, attempts, phase }));
const deadline = started + timeoutMs - 250;

/** Waits until the socket of `c` has handed every queued byte to the kernel (bounded). */
async function flushed(c) {
  await waitUntil(() => !c.provider.ws || c.provider.ws.bufferedAmount === 0, deadline, `${c.name} to flush its socket`, 10);
}

try {
  if (mode === 'read') {
    phase = 'read: waiting for synced';
    const reader = connectDoc(opts.url, opts.room, opts.token, { name: 'reader', log });
    await reader.waitSynced(deadline);
    phase = 'read: settling';
    await sleep(Math.min(opts['settle-ms'], Math.max(0, deadline - Date.now())));
    reader.check();
    const text = reader.text.toString();
    reader.destroy();
    finish({ text, ms: Date.now() - started }, 0);
  }

  // ---------------------------------------------------------------- write
  phase = 'write: waiting for synced';
  const writer = connectDoc(opts.url, opts.room, opts.token, { name: 'writer', log });
  await writer.waitSynced(deadline);
  phase = 'write: appending';
  writer.text.insert(writer.text.length, opts.text);
  const expected = writer.text.toString();
  await flushed(writer);
  // The update is on the wire ahead of the close frame; give the server a moment anyway before
  // the connection (and, on some servers, the room) goes away.
  await sleep(100);
  writer.destroy();

  // Fresh documents until one receives the full text from the server. A server that stores the
  // update asynchronously may need a second attempt, hence the bounded retry.
  phase = 'write: verifying with a fresh provider';
  let seen = null;
  for (;;) {
    attempts++;
    const verifier = connectDoc(opts.url, opts.room, opts.token, { name: `verifier${attempts}`, log });
    try {
      const attemptDeadline = Math.min(deadline, Date.now() + 5000);
      await verifier.waitSynced(attemptDeadline);
      await waitUntil(() => verifier.text.toString() === expected, Math.min(deadline, Date.now() + 1000), 'the full text', 20).catch(() => {});
      seen = verifier.text.toString();
    } catch (e) {
      if (verifier.permanent) throw e; // the server refuses us: retrying is pointless
      log(`attempt ${attempts}: ${e.message}`);
    } finally {
      verifier.destroy();
    }
    if (seen === expected) break;
    if (Date.now() >= deadline - 500) {
      throw new Error(`no fresh provider saw the written text after ${attempts} attempt(s); the last saw ${seen === null ? 'nothing (no sync)' : JSON.stringify(seen.slice(0, 200))} (${seen?.length ?? 0} chars), expected ${expected.length} chars`);
    }
    await sleep(200);
  }
  finish({ ok: true, text: seen, attempts, ms: Date.now() - started }, 0);
} catch (e) {
  fail(e);
}
