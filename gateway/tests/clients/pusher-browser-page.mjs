// The page that pusher-browser.mjs bundles (esbuild, for the browser: pusher-js's `browser`
// build, dist/web/pusher.js) and opens in headless Chromium. An unmodified pusher-js, configured
// the way an application on a self-hosted server configures it, with the DEFAULT authorization
// transport: pusher-js POSTs socket_id & channel_name (form-encoded) to /pusher/auth on the page's
// own origin, served by pusher-browser.mjs with the `pusher` server library.
//
// Configuration comes from the page URL: ?key=&host=&port=&pub=<public channel>&presence=<presence channel>.
// The test reads the state through `window.pusherTest`.

import Pusher from 'pusher-js';

const q = new URLSearchParams(location.search);
const key = q.get('key');
const pubName = q.get('pub');
const presName = q.get('presence');
if (!key || !pubName || !presName) throw new Error('the page needs ?key=&host=&port=&pub=&presence=');

const state = {
  connection: 'initialized',
  socketId: null,
  events: [], // {channel, event, data, metadata}
  subscribed: {}, // channel -> true | {error}
  members: null, // presence members as the page sees them
  errors: [],
};
window.pusherTest = state;

const statusEl = document.getElementById('status');
const logEl = document.getElementById('log');
function show(line) {
  const li = document.createElement('li');
  li.textContent = line;
  logEl.appendChild(li);
}

const pusher = new Pusher(key, {
  cluster: 'mt1',
  wsHost: q.get('host'),
  wsPort: Number(q.get('port')),
  forceTLS: false,
  enabledTransports: ['ws'],
  enableStats: false,
  channelAuthorization: { endpoint: '/pusher/auth', transport: 'ajax' },
});
window.pusherClient = pusher;
state.connection = pusher.connection.state; // the constructor already started connecting

pusher.connection.bind('state_change', ({ current }) => {
  state.connection = current;
  state.socketId = pusher.connection.socket_id ?? null;
  statusEl.textContent = `${current}${state.socketId ? ` (socket ${state.socketId})` : ''}`;
});
pusher.connection.bind('error', (err) => {
  state.errors.push(JSON.parse(JSON.stringify(err ?? null)));
});

function membersSnapshot(members) {
  return { count: members.count, me: members.me, ids: Object.keys(members.members).sort(), hash: members.members };
}

for (const name of [pubName, presName]) {
  const ch = pusher.subscribe(name);
  ch.bind('pusher:subscription_succeeded', () => {
    state.subscribed[name] = true;
    show(`subscribed ${name}`);
    if (name === presName) state.members = membersSnapshot(ch.members);
  });
  ch.bind('pusher:subscription_error', (e) => {
    state.subscribed[name] = { error: e };
    show(`subscription error ${name}: ${JSON.stringify(e)}`);
  });
  ch.bind_global((event, data) => {
    if (event.startsWith('pusher:subscription')) return;
    if (name === presName && ch.members) state.members = membersSnapshot(ch.members);
  });
  // Named events with metadata (user_id of client events on presence channels).
  const emit = ch.emit.bind(ch);
  ch.emit = (event, data, metadata) => {
    if (!event.startsWith('pusher:subscription')) {
      state.events.push({ channel: name, event, data: JSON.parse(JSON.stringify(data ?? null)), metadata: metadata ?? null });
      show(`${name}: ${event} ${JSON.stringify(data)}`);
    }
    const r = emit(event, data, metadata);
    if (name === presName && ch.members) state.members = membersSnapshot(ch.members);
    return r;
  };
}

/** Sends a client event on the presence channel (called by the test through page.evaluate). */
window.sendClientEvent = (event, data) => pusher.channel(presName).trigger(event, data);
