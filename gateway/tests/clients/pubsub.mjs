// Interop check with Node `ws` (a client no one here wrote), with permessage-deflate on.
// Usage: node pubsub.mjs HOST:PORT. Exit code 0 on success.
import WebSocket from "ws";

const addr = process.argv[2];
const url = `ws://${addr}/ws`;

function open(opts = {}) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, ["ringcast.v1"], { perMessageDeflate: true, ...opts });
    const queue = [];
    const waiters = [];
    ws.on("message", (data, isBinary) => {
      if (isBinary) return reject(new Error("binary from server"));
      const ev = JSON.parse(data.toString());
      const w = waiters.shift();
      if (w) w(ev); else queue.push(ev);
    });
    ws.next = () => new Promise((res, rej) => {
      const timer = setTimeout(() => rej(new Error("timeout waiting for an event")), 10000);
      const done = (ev) => { clearTimeout(timer); res(ev); };
      if (queue.length) done(queue.shift()); else waiters.push(done);
    });
    ws.on("open", () => resolve(ws));
    ws.on("error", reject);
  });
}

function check(cond, what) {
  if (!cond) { console.error("FAILED:", what); process.exit(1); }
}

const sub = await open();
const pub = await open();
check(sub.extensions.includes("permessage-deflate"), `deflate negotiated: ${sub.extensions}`);
check((await sub.next()).ev === "hello", "hello");
check((await pub.next()).ev === "hello", "hello");
sub.send(JSON.stringify({ op: "subscribe", id: 1, room: "node.room" }));
const s = await sub.next();
check(s.ev === "subscribed", JSON.stringify(s));
const big = "x".repeat(4000);
for (let i = 0; i < 30; i++) {
  pub.send(JSON.stringify({ op: "publish", id: i, room: "node.room", data: { i, big } }));
  const ack = await pub.next();
  check(ack.ev === "published" && ack.id === i, JSON.stringify(ack));
}
for (let i = 0; i < 30; i++) {
  const ev = await sub.next();
  check(ev.ev === "msg" && ev.offset === i + 1 && ev.data.i === i && ev.data.big === big, JSON.stringify(ev).slice(0, 200));
}
sub.close(1000);
pub.close(1000);
console.log("node ws interop: ok");
