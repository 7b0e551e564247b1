// Browser interop check of a y-websocket server: headless Chromium edits a <textarea> bound to a
// Y.Text through an unmodified y-websocket WebsocketProvider, next to a Node client in the same
// room.
//
//   node yjs-browser.mjs --url ws://127.0.0.1:PORT/yjs --room docs.readme [--token JWT]
//        [--timeout-ms 60000] [--screenshot out.png]
//
// Steps: bundle yjs-browser-page.mjs with esbuild into a temp dir, serve it from a throwaway HTTP
// server on 127.0.0.1, open it in Chromium (/usr/bin/chromium, or $CHROMIUM), wait for the page's
// provider to sync; connect a Node client; then
//   (a) type into the textarea with the keyboard: the Node client must see the typed text;
//   (b) the Node client inserts text: the textarea must show it;
// and finally the textarea, the page's Y.Text and the Node client's Y.Text must be equal.
//
// Last stdout line: {"ok":true,"browser_to_node":true,"node_to_browser":true,"ms":...}
// Exit 0 only when all of that held; 1 otherwise (with "error" in the JSON).

import { closeBrowser, launchChromium, openPage, servePage } from './browser.mjs';
import { finish, hardTimeout, makeLog, parseArgs, waitUntil } from './common.mjs';
import { connectDoc } from './yjs-common.mjs';

const log = makeLog('yjs-browser');
const started = Date.now();
let phase = 'parsing arguments';
const result = { ok: false, browser_to_node: false, node_to_browser: false };
const pageProblems = []; // uncaught page exceptions and console errors, reported on failure

let browser;
let failing = false;
/** Reports the failure after closing Chromium (at most 2 s; playwright kills it on exit anyway). */
async function fail(err) {
  const report = { ...result, phase, error: `${phase}: ${err.message ?? err}`, page_problems: pageProblems.slice(0, 10) };
  if (!failing && browser) {
    failing = true;
    await closeBrowser(browser, 2000).catch(() => {});
  }
  finish({ ...report, ms: Date.now() - started }, 1);
}
process.on('uncaughtException', fail);
process.on('unhandledRejection', fail);

let opts;
try {
  opts = parseArgs(process.argv.slice(2), {
    url: { type: 'string', default: '' },
    room: { type: 'string', default: '' },
    token: { type: 'string', default: '' },
    'timeout-ms': { type: 'int', default: 60000 },
    screenshot: { type: 'string', default: '' },
  });
} catch (e) {
  finish({ ...result, error: `bad arguments: ${e.message}` }, 1);
}
const argErrors = [];
if (!opts.url) argErrors.push('--url is required');
if (!opts.room) argErrors.push('--room is required');
if (opts['timeout-ms'] < 8000) argErrors.push('--timeout-ms must be at least 8000');
if (argErrors.length) finish({ ...result, error: `bad arguments: ${argErrors.join('; ')}` }, 1);

const timeoutMs = opts['timeout-ms'];
hardTimeout(timeoutMs, () => ({ ...result, phase, page_problems: pageProblems.slice(0, 10) }));
// Waits end 3 s before the hard timeout, leaving time to close Chromium and report their error.
const deadline = started + timeoutMs - 3000;
const remaining = () => Math.max(1, deadline - Date.now());

const INDEX_HTML = `<!doctype html>
<html><head><meta charset="utf-8"><title>ringcast y-websocket test</title>
<style>body{font:14px sans-serif;margin:16px}textarea{width:600px;height:200px;font:14px monospace}</style>
</head><body>
<h1>y-websocket textarea</h1>
<p>status: <span id="status">connecting</span></p>
<textarea id="editor" spellcheck="false"></textarea>
<script src="/bundle.js"></script>
</body></html>`;

let httpServer;
let node;
try {
  phase = 'bundling the page';
  // The page script: yjs + y-websocket + the textarea binding.
  httpServer = await servePage({ entry: 'yjs-browser-page.mjs', tmpPrefix: 'ringcast-yjs-browser-', html: INDEX_HTML, log });
  const pagePort = httpServer.address().port;

  phase = 'launching chromium';
  browser = await launchChromium(remaining());
  const page = await openPage(browser, { viewport: { width: 800, height: 400 }, problems: pageProblems, log });

  phase = 'opening the page';
  const q = new URLSearchParams({ ws: opts.url, room: opts.room, token: opts.token });
  await page.goto(`http://127.0.0.1:${pagePort}/?${q}`, { timeout: remaining() });

  phase = 'waiting for the page to sync';
  // Synced, or closed by the server with a 44xx code, after which y-websocket stops reconnecting.
  const pageSynced = () =>
    window.yjsTest?.synced === true || (window.yjsTest?.closes ?? []).some((c) => c >= 4400 && c < 4500);
  let waitError = '';
  await page.waitForFunction(pageSynced, null, { timeout: remaining(), polling: 50 }).catch((e) => {
    waitError = e.message.split('\n')[0];
  });
  const st = await page.evaluate(() => window.yjsTest && { synced: window.yjsTest.synced, status: window.yjsTest.status, closes: window.yjsTest.closes });
  if (!st?.synced) throw new Error(`the page's provider did not sync (state ${JSON.stringify(st)}) ${waitError}`);

  phase = 'connecting the node client';
  node = connectDoc(opts.url, opts.room, opts.token, { name: 'node', log });
  await node.waitSynced(deadline);
  // The room may hold text from earlier runs: both sides must start from the same text.
  await waitUntil(
    async () => (await page.evaluate(() => document.getElementById('editor').value)) === node.text.toString(),
    deadline,
    'the textarea to show the text the node client synced',
    50,
  );

  const nonce = `${process.pid.toString(36)}${Date.now().toString(36)}`;

  // (a) browser -> node: real key presses at the end of the textarea.
  phase = '(a) typing in the browser';
  const typed = `typed in chromium ${nonce}.`;
  await page.click('#editor', { timeout: remaining() });
  await page.keyboard.press('Control+End');
  await page.keyboard.type(typed, { delay: 5 });
  phase = '(a) waiting for the node client to see the typed text';
  await waitUntil(() => node.text.toString().includes(typed), deadline, () => `the node client to see ${JSON.stringify(typed)} (it holds ${JSON.stringify(node.text.toString().slice(-120))})`, 20);
  result.browser_to_node = true;

  // (b) node -> browser: an insert at the end of the Y.Text.
  phase = '(b) inserting from node';
  const inserted = ` node says ${nonce}!`;
  node.text.insert(node.text.length, inserted);
  phase = '(b) waiting for the textarea to show the node text';
  try {
    await page.waitForFunction((s) => document.getElementById('editor').value.includes(s), inserted, { timeout: remaining(), polling: 20 });
  } catch (e) {
    const value = await page.evaluate(() => document.getElementById('editor').value).catch(() => '?');
    throw new Error(`the textarea never showed ${JSON.stringify(inserted)} (it shows ${JSON.stringify(value.slice(-120))}): ${e.message.split('\n')[0]}`);
  }
  result.node_to_browser = true;

  // More typing after the remote insert: the caret must still be at the end (the binding carries
  // it through remote changes), and everything must converge.
  phase = 'typing after the remote insert';
  const typed2 = ` more ${nonce}`;
  await page.keyboard.type(typed2, { delay: 5 });
  phase = 'waiting for the textarea, the page and node to agree';
  await waitUntil(
    async () => {
      const [value, pageText] = await page.evaluate(() => [document.getElementById('editor').value, window.yjsTest.text()]);
      const nodeText = node.text.toString();
      return value === pageText && pageText === nodeText && nodeText.endsWith(`${inserted}${typed2}`);
    },
    deadline,
    () => `textarea == page Y.Text == node Y.Text ending in ${JSON.stringify(inserted + typed2)}; node holds ${JSON.stringify(node.text.toString().slice(-120))}`,
    50,
  );
  const finalText = node.text.toString();
  if (opts.screenshot) await page.screenshot({ path: opts.screenshot, timeout: remaining() });
  const errors = pageProblems.filter((p) => p.startsWith('pageerror'));
  if (errors.length) throw new Error(`the page threw: ${errors.join(' | ')}`);

  result.ok = true;
  result.length = finalText.length;
  phase = 'closing';
  node.destroy();
  await closeBrowser(browser, 5000);
  httpServer.close();
  finish({ ...result, ms: Date.now() - started }, 0);
} catch (e) {
  fail(e);
}
