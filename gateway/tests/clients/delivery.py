"""Delivery features with Python `websockets` (a client no one here wrote).

Usage: python3 delivery.py HOST:PORT
Presence with join/leave (including a connection dropped without a close frame), an ephemeral
event that reaches the other member but not its sender, and the history op. (Conflation is shown
by gateway/tests/delivery.rs with a client whose socket really stops reading; this library keeps
reading into its own buffers.) Exit 0 on success.
"""
import asyncio
import json
import sys

import websockets


async def recv_ev(ws, name, timeout=10):
    """The next event called `name`, skipping others."""
    while True:
        ev = json.loads(await asyncio.wait_for(ws.recv(), timeout=timeout))
        if ev["ev"] == name:
            return ev


async def main(addr):
    url = f"ws://{addr}/ws"
    async with websockets.connect(url) as a, websockets.connect(url) as b:
        hello_b = json.loads(await b.recv())
        await a.recv()
        await a.send(json.dumps({"op": "subscribe", "id": 1, "room": "doc.py"}))
        await recv_ev(a, "subscribed")
        await b.send(json.dumps({"op": "subscribe", "id": 1, "room": "doc.py"}))
        await recv_ev(b, "subscribed")
        join = await recv_ev(a, "join")
        assert join["member"]["client"] == hello_b["client"], join
        await a.send(json.dumps({"op": "presence", "id": 2, "room": "doc.py"}))
        p = await recv_ev(a, "presence")
        assert len(p["members"]) == 2, p
        await b.send(json.dumps({"op": "event", "room": "doc.py", "data": {"typing": True}}))
        ev = await recv_ev(a, "event")
        assert ev["data"] == {"typing": True}, ev
        await a.send(json.dumps({"op": "publish", "id": 3, "room": "doc.py", "data": "m1"}))
        await recv_ev(a, "published")
        await a.send(json.dumps({"op": "history", "id": 4, "room": "doc.py"}))
        h = await recv_ev(a, "history")
        assert [m["data"] for m in h["messages"]] == ["m1"], h
        # Drop b without a close frame: a sees it leave.
        b.transport.abort()
        leave = await recv_ev(a, "leave")
        assert leave["member"]["client"] == hello_b["client"], leave

    print("python delivery interop: ok")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
