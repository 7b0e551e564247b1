// What the y-websocket test clients (yjs-*.mjs) share beyond common.mjs: the Yjs libraries and a
// y-websocket provider wrapper that records why a connection closed. The conventions (one JSON
// line on stdout, bounded waits, hard timeout) are those of common.mjs.

import WebSocket from 'ws';
import * as Y from 'yjs';
import { WebsocketProvider } from 'y-websocket';
import { waitUntil } from './common.mjs';

export { Y, WebSocket, WebsocketProvider };

/**
 * A Y.Doc with a y-websocket provider on `serverUrl` (e.g. ws://127.0.0.1:8080/yjs) and room
 * `room`, connected the way the brief's browser would connect: `ws` as the WebSocket, the token
 * as the `token` URL parameter (none when empty), BroadcastChannel off.
 *
 * The returned object records every close of the connection (`closes`), and `permanent` is set
 * when the server closed with a code in 4400..4499, which y-websocket treats as final (it stops
 * reconnecting); `check()` throws in that case so waits abort at once with a clear message.
 */
export function connectDoc(serverUrl, room, token, { name = 'client', log = () => {} } = {}) {
  const doc = new Y.Doc();
  const text = doc.getText('text');
  const params = token ? { token } : {};
  const provider = new WebsocketProvider(serverUrl, room, doc, {
    WebSocketPolyfill: WebSocket,
    params,
    disableBc: true,
  });
  const c = {
    name,
    doc,
    text,
    provider,
    url: provider.url,
    closes: [],
    errors: 0,
    permanent: null,
    syncs: 0,
    /** Throws when the server ended this connection for good. */
    check() {
      if (c.permanent) {
        throw new Error(`${name}: server closed ${c.url} with code ${c.permanent.code} (${c.permanent.reason || 'no reason'}), y-websocket does not reconnect`);
      }
    },
    /** Waits until the provider has synced (received sync step 2) on its current connection. */
    async waitSynced(deadline) {
      await waitUntil(
        () => {
          c.check();
          return provider.synced;
        },
        deadline,
        () => `${name} to sync with ${c.url} (${c.closes.length} closes so far, the last: ${JSON.stringify(c.closes.slice(-3))}; connection errors: ${c.errors})`,
        20, // poll interval, ms
      );
    },
    destroy() {
      try {
        provider.destroy();
      } catch (e) {
        log(`${name}: provider.destroy failed: ${e.message}`);
      }
      doc.destroy();
    },
  };
  provider.on('connection-close', (event) => {
    // `event` is null when the provider closed the socket itself (disconnect() or its watchdog).
    const entry = event ? { code: event.code, reason: event.reason || '' } : { code: null, reason: 'closed locally' };
    c.closes.push(entry);
    if (event) log(`${name}: connection closed by peer: code ${entry.code} ${entry.reason}`);
  });
  provider.on('connection-error', () => {
    c.errors++;
  });
  provider.on('closed', (event) => {
    c.permanent = { code: event.code, reason: event.reason || '' };
  });
  provider.on('sync', (state) => {
    if (state) c.syncs++;
  });
  return c;
}

