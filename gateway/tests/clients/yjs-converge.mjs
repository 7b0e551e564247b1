// Concurrent-editing convergence check over a y-websocket server (ringcast's /yjs endpoint, or the
// reference @y/websocket-server).
//
//   node yjs-converge.mjs --urls ws://127.0.0.1:PORT/yjs[,ws://127.0.0.1:PORT2/yjs] --room docs.readme
//        [--clients 3] [--ops 200] [--tokens t1,t2] [--seed 1] [--offline] [--awareness] [--timeout-ms 60000]
//
// N clients (spread round-robin over the URLs, tokens reused round-robin, no token when --tokens
// is empty) each open a Y.Doc with a Y.Text 'text' through an unmodified y-websocket
// WebsocketProvider, wait for `synced`, then make M random edits (inserts of short strings at
// random positions, deletes of random ranges) with 0-5 ms pauses, all clients at the same time.
// With --offline, client 0 calls provider.disconnect() after a third of its edits, keeps editing
// offline, calls provider.connect() after two thirds and finishes (and must sync again).
// Then every client's text and state vector must become identical.
// With --awareness, each client also publishes an awareness state {user: {name}} once synced,
// and at the end every client must see every other client's state (with --offline, everyone
// publishes again after client 0's reconnect: see the note at the check).
//
// Last stdout line: {"converged":true,"clients":3,"ops":600,"length":...,"sha256":...,"ms":...}
// Exit 0 only when converged; 1 on divergence, timeout or error (with "error" in the JSON).

import { bytesEqual, finish, hardTimeout, makeLog, parseArgs, prng, sha256, sleep, splitList, waitUntil } from './common.mjs';
import { connectDoc, Y } from './yjs-common.mjs';

const log = makeLog('yjs-converge');
const started = Date.now();
let phase = 'parsing arguments';
let opts;
let clients = [];

/** Partial result for failures: what each client holds right now. */
function snapshot() {
  return {
    converged: false,
    phase,
    clients: clients.length,
    ops: opts ? clients.length * opts.ops : 0,
    lengths: clients.map((c) => c.text.length),
    sha256s: clients.map((c) => sha256(c.text.toString()).slice(0, 16)),
    synced: clients.map((c) => c.provider.synced),
    closes: clients.map((c) => c.closes.length),
    // What each client holds, for a failure's diagnosis: its own client id, its state vector,
    // and the clocks its pending (not yet integrable) updates wait for.
    ids: clients.map((c) => c.doc.clientID),
    state_vectors: clients.map((c) => Object.fromEntries(Y.decodeStateVector(Y.encodeStateVector(c.doc)))),
    pending: clients.map((c) => (c.doc.store.pendingStructs ? Object.fromEntries(c.doc.store.pendingStructs.missing) : null)),
    pending_ds: clients.map((c) => c.doc.store.pendingDs !== null),
    deleted_only_in_0: clients.length > 1 ? deletedOnlyIn(clients[0].doc, clients[1].doc) : [],
    deleted_only_in_1: clients.length > 1 ? deletedOnlyIn(clients[1].doc, clients[0].doc) : [],
    ms: Date.now() - started,
  };
}

/** The clocks deleted in `a` and not in `b`, as [client, first clock, count] runs (at most 20). */
function deletedOnlyIn(a, b) {
  const mine = Y.createDeleteSetFromStructStore(a.store);
  const theirs = Y.createDeleteSetFromStructStore(b.store);
  const runs = [];
  mine.clients.forEach((items, client) => {
    for (const it of items) {
      for (let k = 0; k < it.len; k++) {
        const clock = it.clock + k;
        if (Y.isDeleted(theirs, Y.createID(client, clock))) continue;
        const last = runs[runs.length - 1];
        if (last && last[0] === client && last[1] + last[2] === clock) last[2]++;
        else runs.push([client, clock, 1]);
      }
    }
  });
  return runs.slice(0, 20);
}

function fail(err) {
  finish({ ...snapshot(), error: `${phase}: ${err.message ?? err}` }, 1);
}
process.on('uncaughtException', fail);
process.on('unhandledRejection', fail);

try {
  opts = parseArgs(process.argv.slice(2), {
    urls: { type: 'string', default: '' },
    room: { type: 'string', default: '' },
    clients: { type: 'int', default: 3 },
    ops: { type: 'int', default: 100 },
    tokens: { type: 'string', default: '' },
    seed: { type: 'int', default: 1 },
    offline: { type: 'bool', default: false },
    awareness: { type: 'bool', default: false },
    'timeout-ms': { type: 'int', default: 60000 },
  });
} catch (e) {
  finish({ converged: false, error: `bad arguments: ${e.message}` }, 1);
}
const urls = splitList(opts.urls);
const tokens = splitList(opts.tokens);
const argErrors = [];
if (urls.length === 0) argErrors.push('--urls is required');
if (!opts.room) argErrors.push('--room is required');
if (opts.clients < 2 || opts.clients > 5) argErrors.push(`--clients must be 2..5, got ${opts.clients}`);
if (opts.ops < 1 || opts.ops > 100000) argErrors.push(`--ops must be 1..100000, got ${opts.ops}`);
if (opts['timeout-ms'] < 1000) argErrors.push('--timeout-ms must be at least 1000');
if (argErrors.length) finish({ converged: false, error: `bad arguments: ${argErrors.join('; ')}` }, 1);

const timeoutMs = opts['timeout-ms'];
hardTimeout(timeoutMs, snapshot);
// Waits end a little before the hard timeout, so their more specific error is the one reported.
const deadline = started + timeoutMs - 250;

const ALPHABET = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789 éß';
let inserts = 0;
let deletes = 0;

/** One random edit of client `c`'s text: an insert (always when empty, else 65%) or a delete of 1-6 chars. */
function randomEdit(c, rnd) {
  const text = c.text;
  const len = text.length;
  if (len === 0 || rnd() < 0.65) {
    const n = 1 + Math.floor(rnd() * 8);
    let s = '';
    for (let i = 0; i < n; i++) s += ALPHABET[Math.floor(rnd() * ALPHABET.length)];
    text.insert(Math.floor(rnd() * (len + 1)), s);
    inserts++;
    c.inserts = (c.inserts ?? 0) + 1;
  } else {
    const pos = Math.floor(rnd() * len);
    const n = 1 + Math.floor(rnd() * Math.min(6, len - pos));
    text.delete(pos, n);
    deletes++;
  }
}

/** Client `c`'s M edits; client 0 goes offline for the middle third when --offline. */
async function editLoop(c, index) {
  const rnd = prng(opts.seed * 1000 + index);
  const goOffline = opts.offline && index === 0;
  const offAt = Math.floor(opts.ops / 3);
  const onAt = Math.floor((2 * opts.ops) / 3);
  for (let k = 0; k < opts.ops; k++) {
    c.check();
    if (goOffline && k === offAt) {
      c.provider.disconnect();
      if (c.provider.wsconnected) throw new Error(`${c.name} still connected after provider.disconnect()`);
      log(`${c.name}: offline after ${k} edits`);
    }
    if (goOffline && k === onAt) {
      c.provider.connect();
      log(`${c.name}: reconnecting after ${k} edits`);
    }
    randomEdit(c, rnd);
    await sleep(Math.floor(rnd() * 6)); // 0-5 ms: the clients' edits interleave
  }
}

try {
  phase = 'connecting';
  clients = Array.from({ length: opts.clients }, (_, i) => {
    const url = urls[i % urls.length];
    const token = tokens.length ? tokens[i % tokens.length] : '';
    return connectDoc(url, opts.room, token, { name: `client${i}`, log });
  });
  log(`${clients.length} clients on ${urls.length} url(s), room '${opts.room}', e.g. ${clients[0].url.replace(/token=[^&]*/, 'token=…')}`);

  phase = 'waiting for synced';
  await Promise.all(clients.map((c) => c.waitSynced(deadline)));
  const syncedMs = Date.now() - started;
  if (opts.awareness) {
    // setLocalStateField bumps the awareness clock to 1. (The state y-websocket sends on connect
    // has clock 0, which y-protocols' applyAwarenessUpdate ignores for a client it never saw.)
    for (const c of clients) c.provider.awareness.setLocalStateField('user', { name: c.name });
  }

  phase = 'editing';
  await Promise.all(clients.map((c, i) => editLoop(c, i)));
  const editedAt = Date.now();

  if (opts.offline) {
    phase = 'waiting for the offline client to sync again';
    await clients[0].waitSynced(deadline);
  }

  phase = 'waiting for convergence';
  await waitUntil(
    () => {
      for (const c of clients) c.check();
      const t0 = clients[0].text.toString();
      const sv0 = Y.encodeStateVector(clients[0].doc);
      return clients.every((c) => c.text.toString() === t0 && bytesEqual(Y.encodeStateVector(c.doc), sv0));
    },
    deadline,
    'all clients to hold the same text and state vector',
    25,
  );
  if (opts.awareness) {
    if (opts.offline) {
      // y-protocols keeps the clock of a removed awareness state, and only a higher clock brings
      // it back: provider.disconnect() sent client 0's state as null (same clock), so the others
      // ignore the state it re-sends on connect with that clock; and client 0 dropped the
      // others' states locally, so it ignores the states the server sends it on reconnect.
      // Each side reappears with its next awareness change (at the latest the 15 s renewal):
      // everyone makes one now, as an application would with its next cursor move.
      for (const c of clients) c.provider.awareness.setLocalStateField('user', { name: c.name, round: 2 });
    }
    phase = 'waiting for every client to see every other client\'s awareness state';
    await waitUntil(
      () =>
        clients.every((c) =>
          clients.every((d) => d === c || c.provider.awareness.getStates().get(d.doc.clientID)?.user?.name === d.name),
        ),
      deadline,
      () =>
        `awareness states; seen: ${clients.map((c) => `${c.name}: [${[...c.provider.awareness.getStates().values()].map((st) => st?.user?.name ?? '?').join(',')}]`).join(' ')}`,
      25,
    );
  }

  const text = clients[0].text.toString();
  // Every client that inserted must appear in the (common) state vector: its edits reached all.
  // (Deletes alone do not advance a client's clock, hence the condition.)
  const sv = Y.decodeStateVector(Y.encodeStateVector(clients[0].doc));
  const missing = clients.filter((c) => c.inserts > 0 && !sv.has(c.doc.clientID)).map((c) => c.name);
  if (missing.length) throw new Error(`state vectors agree but lack the edits of ${missing.join(', ')}`);

  const result = {
    converged: true,
    clients: clients.length,
    ops: clients.length * opts.ops,
    inserts,
    deletes,
    length: text.length,
    sha256: sha256(text),
    urls: urls.length,
    offline: opts.offline,
    awareness: opts.awareness,
    seed: opts.seed,
    reconnects: clients.map((c) => c.syncs - 1).reduce((a, b) => a + b, 0),
    synced_ms: syncedMs,
    converge_ms: Date.now() - editedAt,
    ms: Date.now() - started,
  };
  for (const c of clients) c.destroy();
  finish(result, 0);
} catch (e) {
  fail(e);
}
