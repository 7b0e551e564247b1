// Socket.IO 4 peer, the way its docs show room broadcasting: a connection with ?room=R joins R;
// one with ?role=pub emits "pub" events, each broadcast to the room as "msg" (io.to(room).emit:
// the packet is encoded once per broadcast). WebSocket transport only, no compression.
// Usage: node server.mjs [PORT]   (prints "listening public=127.0.0.1:PORT")
import { createServer } from "node:http";
import { Server } from "socket.io";

const port = Number(process.argv[2] || 0);
const http = createServer();
const io = new Server(http, { transports: ["websocket"], perMessageDeflate: false, serveClient: false });

io.on("connection", (socket) => {
  const { room, role } = socket.handshake.query;
  if (role === "pub") {
    socket.on("pub", (data) => io.to(room).emit("msg", data));
  } else {
    socket.join(room);
  }
});

http.listen(port, "127.0.0.1", () => {
  console.log(`listening public=127.0.0.1:${http.address().port}`);
});
