"""TLS check with Python `websockets` + `ssl` (clients no one here wrote).

Usage: python3 tls_client.py HOST:PORT CA_FILE TOKEN [RELOADED_CA_FILE]

Connects to wss://localhost:PORT/ws (the certificate is verified against CA_FILE, for the name
`localhost`), token in a `ringcast.token.` subprotocol entry, subscribes and receives its own
publish. With RELOADED_CA_FILE: prints "ready", waits for a line on stdin (the test swaps the
certificate and sends SIGHUP meanwhile), then opens a second connection that must verify against
the NEW certificate, publishes on it, and checks the FIRST (older-certificate) connection still
receives. Prints one JSON line with what it saw; exit 0 on success.
"""
import asyncio
import json
import ssl
import sys

import websockets


async def recv_event(ws):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout=10))


def context(cafile):
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


async def open_conn(port, cafile, token):
    ws = await websockets.connect(
        f"wss://localhost:{port}/ws",
        ssl=context(cafile),
        subprotocols=["ringcast.v1", "ringcast.token." + token],
    )
    assert ws.subprotocol == "ringcast.v1", ws.subprotocol
    assert (await recv_event(ws))["ev"] == "hello"
    tls = ws.transport.get_extra_info("ssl_object")
    cert = tls.getpeercert()
    cn = dict(x[0] for x in cert["subject"])["commonName"]
    return ws, {"version": tls.version(), "alpn": tls.selected_alpn_protocol(), "cn": cn}


async def roundtrip(sub, pub, room, n):
    await pub.send(json.dumps({"op": "publish", "id": n, "room": room, "data": n}))
    while True:
        ev = await recv_event(sub)
        if ev["ev"] == "msg":
            assert ev["data"] == n, ev
            return


async def main(addr, cafile, token, reloaded):
    port = addr.rsplit(":", 1)[1]
    first, seen = await open_conn(port, cafile, token)
    await first.send(json.dumps({"op": "subscribe", "id": 1, "room": "tls.room"}))
    assert (await recv_event(first))["ev"] == "subscribed"
    await roundtrip(first, first, "tls.room", 1)
    out = {"first": seen}
    if reloaded:
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        second, seen2 = await open_conn(port, reloaded, token)
        out["second"] = seen2
        await roundtrip(first, second, "tls.room", 2)
        out["first_still_live"] = True
        await second.close()
    await first.close()
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None))
