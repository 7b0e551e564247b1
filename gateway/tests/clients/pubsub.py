"""Interop check with Python `websockets` (a client no one here wrote).

Usage: python3 pubsub.py HOST:PORT
Two clients: one subscribes, the other publishes 20 messages; the subscriber must get them all in
order with consecutive offsets, then recover 5 missed ones after reconnecting. Exit 0 on success.
"""
import asyncio
import json
import sys

import websockets


async def recv_event(ws):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout=10))


async def main(addr):
    url = f"ws://{addr}/ws"
    async with websockets.connect(url, subprotocols=["ringcast.v1"]) as sub, websockets.connect(url) as pub:
        assert sub.subprotocol == "ringcast.v1", sub.subprotocol
        assert (await recv_event(sub))["ev"] == "hello"
        assert (await recv_event(pub))["ev"] == "hello"
        await sub.send(json.dumps({"op": "subscribe", "id": 1, "room": "py.room"}))
        subscribed = await recv_event(sub)
        assert subscribed["ev"] == "subscribed", subscribed
        epoch = subscribed["epoch"]
        for i in range(20):
            await pub.send(json.dumps({"op": "publish", "id": i, "room": "py.room", "data": {"i": i, "s": "é✓"}}))
            ack = await recv_event(pub)
            assert ack["ev"] == "published" and ack["id"] == i, ack
        for i in range(20):
            ev = await recv_event(sub)
            assert ev["ev"] == "msg" and ev["offset"] == i + 1 and ev["data"] == {"i": i, "s": "é✓"}, ev
        await sub.close()
        for i in range(20, 25):
            await pub.send(json.dumps({"op": "publish", "id": i, "room": "py.room", "data": i}))
            await recv_event(pub)
    async with websockets.connect(url) as again:
        await recv_event(again)
        await again.send(json.dumps({"op": "subscribe", "id": 2, "room": "py.room", "since": {"epoch": epoch, "offset": 20}}))
        ev = await recv_event(again)
        assert ev["ev"] == "subscribed" and ev["recovered"] is True, ev
        got = [(await recv_event(again))["offset"] for _ in range(5)]
        assert got == [21, 22, 23, 24, 25], got
    print("python websockets interop: ok")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
