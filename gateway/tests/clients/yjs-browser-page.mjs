// The page that yjs-browser.mjs bundles (esbuild, for the browser) and opens in headless Chromium:
// a <textarea id="editor"> bound to the Y.Text 'text' of a Y.Doc synced by an unmodified
// y-websocket WebsocketProvider (the browser's own WebSocket).
//
// Configuration comes from the page URL: ?ws=<server url, e.g. ws://127.0.0.1:8080/yjs>
// &room=<room>&token=<token, optional>. The test reads the state through `window.yjsTest`.

import * as Y from 'yjs';
import { WebsocketProvider } from 'y-websocket';

const query = new URLSearchParams(location.search);
const serverUrl = query.get('ws');
const room = query.get('room');
const token = query.get('token') ?? '';
if (!serverUrl || !room) throw new Error('the page needs ?ws=...&room=...');

const doc = new Y.Doc();
const ytext = doc.getText('text');
const provider = new WebsocketProvider(serverUrl, room, doc, {
  params: token ? { token } : {},
  disableBc: true,
});

const area = /** @type {HTMLTextAreaElement} */ (document.getElementById('editor'));
const statusEl = document.getElementById('status');

/** Transaction origin of the textarea's own edits, so the observer does not echo them back. */
const LOCAL = 'textarea';

// textarea -> Y.Text: the edit is the part between the longest common prefix and suffix of the
// text before (the Y.Text, which the textarea mirrors) and after the input event.
area.addEventListener('input', () => {
  const before = ytext.toString();
  const after = area.value;
  const common = Math.min(before.length, after.length);
  let start = 0;
  while (start < common && before[start] === after[start]) start++;
  let end = 0;
  while (end < common - start && before[before.length - 1 - end] === after[after.length - 1 - end]) end++;
  const removed = before.length - start - end;
  const inserted = after.slice(start, after.length - end);
  doc.transact(() => {
    if (removed > 0) ytext.delete(start, removed);
    if (inserted.length > 0) ytext.insert(start, inserted);
  }, LOCAL);
});

// Y.Text -> textarea: replace the value and carry the selection through the change's delta, so
// that typing goes on where the caret was.
ytext.observe((event) => {
  if (event.transaction.origin === LOCAL) return;
  let sel = [area.selectionStart, area.selectionEnd];
  let pos = 0;
  for (const op of event.delta) {
    if (op.retain !== undefined) {
      pos += op.retain;
    } else if (op.insert !== undefined) {
      const n = typeof op.insert === 'string' ? op.insert.length : 1;
      sel = sel.map((s) => (s >= pos ? s + n : s));
      pos += n;
    } else if (op.delete !== undefined) {
      const d = op.delete;
      sel = sel.map((s) => (s > pos ? Math.max(pos, s - d) : s));
    }
  }
  area.value = ytext.toString();
  area.setSelectionRange(sel[0], sel[1]);
});

const state = { status: 'connecting', closes: [] };
provider.on('status', (e) => {
  state.status = e.status;
  statusEl.textContent = `${e.status}${provider.synced ? ', synced' : ''}`;
});
provider.on('sync', (synced) => {
  statusEl.textContent = `${state.status}${synced ? ', synced' : ''}`;
});
provider.on('connection-close', (e) => state.closes.push(e ? e.code : null));

window.yjsTest = {
  get synced() {
    return provider.synced;
  },
  get status() {
    return state.status;
  },
  get closes() {
    return state.closes.slice();
  },
  text: () => ytext.toString(),
  url: provider.url,
};
