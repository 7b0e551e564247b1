// Browser interop check of a Pusher Channels (protocol 7) server: an unmodified pusher-js (its
// browser build) in headless Chromium, next to a Node pusher-js client and the `pusher` server lib.
//
//   node pusher-browser.mjs --host 127.0.0.1 --port P --app-id ID --key K --secret S
//        [--timeout-ms 60000] [--screenshot out.png]
//
// Steps: bundle pusher-browser-page.mjs with esbuild; serve it and an auth endpoint
// (POST /pusher/auth, form-encoded socket_id & channel_name, answered with the server lib's
// authorizeChannel; user "u-browser" on presence channels) from a throwaway HTTP server on
// 127.0.0.1; open the page in Chromium (/usr/bin/chromium, or $CHROMIUM); the page subscribes to a
// public and a presence channel; then
//   (a) the server lib triggers an event on the public channel: the page must receive it;
//   (b) a Node pusher-js client (user "u-node") joins the presence channel: the page must see
//       pusher:member_added and 2 members; the Node client sees the browser user in its list;
//   (c) the page sends client-hello on the presence channel: the Node client gets it with
//       user_id "u-browser";
//   (d) the Node client leaves: the page sees pusher:member_removed.
//
// Last stdout line: {"ok":true,"public_event":true,"member_added":true,"client_event":true,
//                    "member_removed":true,"ms":...}. Exit 0 iff all held; 1 otherwise ("error").

import { closeBrowser, launchChromium, openPage, servePage } from './browser.mjs';
import { finish, hardTimeout, jsonEqual, makeLog, nonce, parseArgs, sleep } from './common.mjs';
import { APP_ARGS, PUSHER_JS_VERSION, appArgErrors, capturePusherJsLog, makeClient, makeServerLib } from './pusher-common.mjs';

const log = makeLog('pusher-browser');
const started = Date.now();
let phase = 'parsing arguments';
const result = { ok: false, public_event: false, member_added: false, client_event: false, member_removed: false, pusher_js: PUSHER_JS_VERSION };
const pageProblems = []; // uncaught page exceptions and console errors, reported on failure
const authRequests = [];

let browser;
let failing = false;
let page;
async function pageState() {
  if (!page) return null;
  return Promise.race([page.evaluate(() => window.pusherTest).catch(() => null), sleep(1000).then(() => null)]);
}
/** Reports the failure with the page's state, after closing Chromium (at most 2 s). */
async function fail(err) {
  const report = { ...result, phase, error: `${phase}: ${err?.message ?? err}`, page_problems: pageProblems.slice(0, 10), auth_requests: authRequests.slice(0, 10) };
  if (!failing) {
    failing = true;
    report.page_state = await pageState();
    if (browser) await closeBrowser(browser, 2000).catch(() => {});
  }
  finish({ ...report, ms: Date.now() - started }, 1);
}
process.on('uncaughtException', fail);
process.on('unhandledRejection', fail);

let opts;
try {
  opts = parseArgs(process.argv.slice(2), {
    ...APP_ARGS,
    'timeout-ms': { type: 'int', default: 60000 },
    screenshot: { type: 'string', default: '' },
    verbose: { type: 'bool', default: false },
  });
} catch (e) {
  finish({ ...result, error: `bad arguments: ${e.message}` }, 2);
}
const argErrors = appArgErrors(opts);
if (opts['timeout-ms'] < 8000) argErrors.push('--timeout-ms must be at least 8000');
if (argErrors.length) finish({ ...result, error: `bad arguments: ${argErrors.join('; ')}` }, 2);

const { host, port, key, secret } = opts;
const appId = opts['app-id'];
capturePusherJsLog({ verbose: opts.verbose, log });
const lib = makeServerLib({ host, port, appId, key, secret });

const timeoutMs = opts['timeout-ms'];
hardTimeout(timeoutMs, () => ({ ...result, phase, page_problems: pageProblems.slice(0, 10) }), { unref: true });
const deadline = started + timeoutMs - 3000;
const remaining = () => Math.max(1, deadline - Date.now());

const INDEX_HTML = `<!doctype html>
<html><head><meta charset="utf-8"><title>ringcast pusher-js test</title>
<style>body{font:14px sans-serif;margin:16px}li{font:12px monospace}</style>
</head><body>
<h1>pusher-js in Chromium</h1>
<p>connection: <span id="status">initialized</span></p>
<ul id="log"></ul>
<script src="/bundle.js"></script>
</body></html>`;

const N = nonce();
const PUB = `browser-pub-${N}`;
const PRES = `presence-browser-${N}`;
const BROWSER_USER = { user_id: 'u-browser', user_info: { name: 'Chromium' } };

/**
 * The auth endpoint pusher-js POSTs to (form-encoded socket_id & channel_name), served next to
 * the page: answered with the server lib's channel authorization (BROWSER_USER on presence).
 */
function pusherAuth(req, res) {
  let body = '';
  req.on('data', (d) => {
    body += d;
    if (body.length > 65536) req.destroy();
  });
  req.on('end', () => {
    const form = new URLSearchParams(body);
    const socketId = form.get('socket_id');
    const channel = form.get('channel_name');
    authRequests.push({ content_type: req.headers['content-type'], socket_id: socketId, channel_name: channel });
    try {
      const auth = channel.startsWith('presence-') ? lib.authorizeChannel(socketId, channel, BROWSER_USER) : lib.authorizeChannel(socketId, channel);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(auth));
    } catch (e) {
      res.writeHead(403, { 'content-type': 'text/plain' });
      res.end(e.message);
    }
  });
}

let node;
let httpServer;
try {
  phase = 'bundling the page';
  httpServer = await servePage({
    entry: 'pusher-browser-page.mjs',
    tmpPrefix: 'ringcast-pusher-browser-',
    html: INDEX_HTML,
    routes: { 'POST /pusher/auth': pusherAuth },
    log,
  });
  const pagePort = httpServer.address().port;

  phase = 'launching chromium';
  browser = await launchChromium(remaining());
  page = await openPage(browser, { viewport: { width: 900, height: 500 }, problems: pageProblems, log });

  phase = 'opening the page';
  const q = new URLSearchParams({ key, host, port: String(port), pub: PUB, presence: PRES });
  await page.goto(`http://127.0.0.1:${pagePort}/?${q}`, { timeout: remaining() });

  phase = 'waiting for the page to connect and subscribe';
  const subscribedBoth = ([a, b]) => {
    const s = window.pusherTest?.subscribed ?? {};
    return (s[a] && s[b]) || Object.values(s).some((v) => v && v.error) || window.pusherTest?.connection === 'failed';
  };
  await page.waitForFunction(subscribedBoth, [PUB, PRES], { timeout: remaining(), polling: 50 }).catch(() => {});
  let st = await page.evaluate(() => window.pusherTest);
  if (st.subscribed[PUB] !== true || st.subscribed[PRES] !== true) throw new Error(`the page did not subscribe to both channels: ${JSON.stringify({ connection: st.connection, subscribed: st.subscribed, errors: st.errors })}`);
  result.socket_id = st.socketId;
  if (!(st.members?.count === 1 && st.members?.me?.id === 'u-browser')) throw new Error(`the page's presence members after subscribing: ${JSON.stringify(st.members)}`);

  phase = '(a) server trigger on the public channel';
  const payload = { from: 'server', n: N, text: 'héllo 😀' };
  await lib.trigger(PUB, 'server-event', payload);
  await page.waitForFunction(([ch]) => window.pusherTest.events.some((e) => e.channel === ch && e.event === 'server-event'), [PUB], { timeout: remaining(), polling: 20 });
  st = await page.evaluate(() => window.pusherTest);
  const got = st.events.find((e) => e.event === 'server-event');
  if (!jsonEqual(got.data, payload)) throw new Error(`the page got ${JSON.stringify(got.data)}`);
  result.public_event = true;

  phase = '(b) a node client joins the presence channel';
  node = makeClient({ host, port, key, authLib: lib, name: 'node', presence: { user_id: 'u-node', user_info: { name: 'Node' } }, log });
  await node.connected(deadline);
  const ns = node.subscribe(PRES);
  const out = await ns.outcome(deadline);
  if (!out.ok) throw new Error(`the node client's presence subscription failed: ${JSON.stringify(out)}`);
  const nodeMembers = ns.channel.members;
  if (!(nodeMembers.count === 2 && jsonEqual(nodeMembers.members['u-browser'], BROWSER_USER.user_info))) throw new Error(`the node client sees members ${JSON.stringify(nodeMembers.members)}`);
  await page.waitForFunction(() => window.pusherTest.events.some((e) => e.event === 'pusher:member_added'), null, { timeout: remaining(), polling: 20 });
  st = await page.evaluate(() => window.pusherTest);
  const added = st.events.find((e) => e.event === 'pusher:member_added');
  if (!(added.data?.id === 'u-node' && jsonEqual(added.data?.info, { name: 'Node' }) && st.members.count === 2)) throw new Error(`member_added on the page: ${JSON.stringify(added)}, members ${JSON.stringify(st.members)}`);
  result.member_added = true;

  phase = '(c) a client event from the page';
  const sentOk = await page.evaluate(() => window.sendClientEvent('client-hello', { from: 'browser' }));
  if (!sentOk) throw new Error('pusher-js in the page did not send the client event');
  const ce = await ns.waitEvent('client-hello', deadline);
  if (!(jsonEqual(ce.data, { from: 'browser' }) && ce.metadata?.user_id === 'u-browser')) throw new Error(`the node client got ${JSON.stringify(ce)}`);
  result.client_event = true;

  phase = '(d) the node client leaves';
  node.close();
  await page.waitForFunction(() => window.pusherTest.events.some((e) => e.event === 'pusher:member_removed'), null, { timeout: remaining(), polling: 20 });
  st = await page.evaluate(() => window.pusherTest);
  if (st.members.count !== 1) throw new Error(`members after the node client left: ${JSON.stringify(st.members)}`);
  result.member_removed = true;

  if (opts.screenshot) await page.screenshot({ path: opts.screenshot, timeout: remaining() });
  const errors = pageProblems.filter((p) => p.startsWith('pageerror'));
  if (errors.length) throw new Error(`the page threw: ${errors.join(' | ')}`);
  result.auth_requests = authRequests;
  result.ok = true;
  phase = 'closing';
  await closeBrowser(browser, 5000);
  httpServer.close();
  finish({ ...result, ms: Date.now() - started }, 0);
} catch (e) {
  fail(e);
}
