#!/usr/bin/env python3
"""What one lookup record per event costs nats-server in memory, and at a restart.

`hs_idempotency` holds one key per accepted event for `idempotency.ttl` (24 h): a busy
day is tens of millions of subjects in one stream. nats-server keeps every subject of a
file stream in an in-memory index (its subject tree), so the bucket's memory grows with
the keys it holds, not with their bytes. This measures that growth on a fresh
nats-server with no hookstream: N records shaped as the service writes them (key
`evt_<ULID>`, a ~60 B JSON value) to a bucket configured as `broker/setup.rs` makes
it, the server's resident memory (`/varz` `mem`) at checkpoints, then a restart: how
long until the stream answers again and what it holds in memory after.

Two key shapes: `drawn` (the API's ULIDs, a shared time prefix) and `keyed` (ids derived
from an Idempotency-Key, 32 random hex digits). The same N messages on one subject are
the control: what the messages alone cost.

    .tools/venv/bin/python benches/profile/kv_subjects.py [N ...]   # default 1000000

Reads nats-server from HOOKSTREAM_TEST_NATS_SERVER (or .tools/venv/bin/nats-server).
"""

import asyncio
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import nats
from nats.js.api import StorageType, StreamConfig

BUCKET_STREAM = "KV_hs_idempotency"
IN_FLIGHT = 4096
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def drawn_id():
    # What the API draws: a ULID, 10 characters of milliseconds then 16 random ones, so
    # the ids of one day share their first characters.
    ms = time.time_ns() // 1_000_000
    stamp = "".join(CROCKFORD[(ms >> (5 * k)) & 31] for k in reversed(range(10)))
    return "evt_" + stamp + "".join(random.choice(CROCKFORD) for _ in range(16))


def keyed_id():
    # What an Idempotency-Key stands for: 128 bits of SHA-256 in hex, no shared prefix.
    return "evt_" + random.randbytes(16).hex()


SHAPES = {"drawn": drawn_id, "keyed": keyed_id, "one subject": lambda: "evt_ONE"}


class Server:
    def __init__(self, binary, store):
        self.binary, self.store = binary, store
        self.port, self.http = free_port(), free_port()
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [self.binary, "-js", "-sd", self.store, "-a", "127.0.0.1",
             "-p", str(self.port), "-m", str(self.http)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                self.varz()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("nats-server did not start")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)

    def varz(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/varz", timeout=5) as r:
            return json.load(r)

    def rss_mib(self):
        return self.varz()["mem"] / 2**20


async def quiet(_error):
    pass


async def connect(server):
    # The server is stopped under the client at a restart: its reconnect errors are noise.
    return await nats.connect(f"nats://127.0.0.1:{server.port}", error_cb=quiet,
                              max_reconnect_attempts=0)


async def stream_state(nc):
    # The raw answer: nats-py's StreamState leaves num_subjects out.
    reply = await nc.request(f"$JS.API.STREAM.INFO.{BUCKET_STREAM}", b"", timeout=30)
    state = json.loads(reply.data)
    if "error" in state:
        raise RuntimeError(state["error"])
    return state["state"]


async def fill(server, n, shape, checkpoints):
    nc = await connect(server)
    js = nc.jetstream()
    await js.add_stream(StreamConfig(
        name=BUCKET_STREAM, subjects=["$KV.hs_idempotency.>"], max_msgs_per_subject=1,
        max_age=86_400, storage=StorageType.FILE, allow_direct=True,
        allow_rollup_hdrs=True, deny_delete=True, max_msg_size=1024, discard="new"))
    seen = {0: server.rss_mib()}
    pending, started = [], time.monotonic()
    for i in range(n):
        key = SHAPES[shape]()
        value = json.dumps({"tenant": "acme", "seq": i + 1, "type": "order.created"}).encode()
        pending.append(asyncio.ensure_future(js.publish(f"$KV.hs_idempotency.ev.{key}", value)))
        if len(pending) >= IN_FLIGHT:
            await asyncio.gather(*pending)
            pending.clear()
        if i + 1 in checkpoints:
            await asyncio.gather(*pending)
            pending.clear()
            seen[i + 1] = server.rss_mib()
    await asyncio.gather(*pending)
    rate = n / (time.monotonic() - started)
    state = await stream_state(nc)
    await nc.close()
    return seen, rate, state["messages"], state["num_subjects"]


async def after_restart(server):
    server.stop()
    started = time.monotonic()
    server.start()
    nc = await connect(server)
    while True:
        try:
            state = await stream_state(nc)
            break
        except Exception:
            await asyncio.sleep(0.05)
    ready = time.monotonic() - started
    await nc.close()
    return ready, server.rss_mib(), state["num_subjects"]


async def run(binary, n, shape):
    store = tempfile.mkdtemp(prefix="hs-kv-subjects-")
    server = Server(binary, store)
    try:
        server.start()
        checkpoints = {n // 4, n // 2, n}
        seen, rate, messages, subjects = await fill(server, n, shape, checkpoints)
        ready, rss, recovered = await after_restart(server)
        server.stop()
        return {"n": n, "shape": shape, "rate": rate, "messages": messages,
                "subjects": subjects, "rss_mib": seen, "restart_s": ready,
                "rss_after_restart_mib": rss, "subjects_after_restart": recovered}
    finally:
        if server.proc and server.proc.poll() is None:
            server.proc.kill()
        shutil.rmtree(store, ignore_errors=True)


def main():
    binary = os.environ.get("HOOKSTREAM_TEST_NATS_SERVER", ".tools/venv/bin/nats-server")
    sizes = [int(a) for a in sys.argv[1:]] or [1_000_000]
    for n in sizes:
        for shape in SHAPES:
            r = asyncio.run(run(binary, n, shape))
            base = r["rss_mib"][0]
            growth = r["rss_mib"][n] - base
            print(f"{shape:12} n={n:>9,} "
                  f"subjects={r['subjects']:>9,} rate={r['rate']:>8,.0f}/s "
                  f"rss {base:.0f} -> " +
                  " -> ".join(f"{r['rss_mib'][c]:.0f}" for c in sorted(r['rss_mib']) if c) +
                  f" MiB (+{growth * 2**20 / n:.0f} B per record); restart {r['restart_s']:.2f} s, "
                  f"rss after {r['rss_after_restart_mib']:.0f} MiB "
                  f"({(r['rss_after_restart_mib'] - base) * 2**20 / n:.0f} B per record above a fresh server)",
                  flush=True)


if __name__ == "__main__":
    main()
