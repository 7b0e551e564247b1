// Raw-broadcast peer on Node `ws`, the way its docs show broadcasting: /raw/<room> joins a room;
// a connection with ?role=pub publishes; each text frame goes to every subscriber of the room.
// Usage: node server.mjs [PORT]   (prints "listening public=127.0.0.1:PORT")
import { WebSocketServer } from "ws";

const port = Number(process.argv[2] || 0);
const rooms = new Map();
const wss = new WebSocketServer({ host: "127.0.0.1", port, perMessageDeflate: false });

wss.on("connection", (ws, req) => {
  const url = new URL(req.url, "http://x");
  if (!url.pathname.startsWith("/raw/")) return ws.close(1008, "unknown path");
  const room = url.pathname.slice(5);
  if (url.searchParams.get("role") === "pub") {
    ws.on("message", (data, isBinary) => {
      const subs = rooms.get(room);
      if (!subs) return;
      for (const c of subs) if (c.readyState === 1) c.send(data, { binary: isBinary });
    });
    return;
  }
  if (!rooms.has(room)) rooms.set(room, new Set());
  rooms.get(room).add(ws);
  ws.on("close", () => rooms.get(room)?.delete(ws));
});

wss.on("listening", () => {
  console.log(`listening public=127.0.0.1:${wss.address().port}`);
});
