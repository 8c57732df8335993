"""Publish one message to JetStream with nats-py, an independent NATS client.

Reads a JSON object on stdin: {"url": "nats://...", "subject": "...",
"headers": [[name, value], ...], "body_b64": "..."}. Waits for the PubAck and prints it
as JSON ({"stream", "seq", "duplicate"}) on stdout; exits 1 with the error on stderr if
the publish is not acknowledged.

Used by tests/it/common/verify.rs to show that an event a third-party producer publishes
on hs.ev.<tenant>.<type> is delivered like one accepted over HTTP.
"""

import asyncio
import base64
import json
import sys

import nats


async def quiet(_err: Exception) -> None:
    # nats-py's default error callback prints a traceback per failed connect attempt;
    # the one error that matters is reported by main().
    pass


async def publish(blob: dict) -> dict:
    # max_reconnect_attempts=0 would mean "retry forever" in nats-py's connect loop: give
    # up after one retry so a dead server fails the test quickly instead of hanging it.
    nc = await nats.connect(
        blob["url"],
        connect_timeout=5,
        max_reconnect_attempts=1,
        reconnect_time_wait=0.5,
        error_cb=quiet,
    )
    try:
        js = nc.jetstream()
        headers = {name: value for name, value in blob["headers"]} or None
        ack = await js.publish(
            blob["subject"], base64.b64decode(blob["body_b64"]), timeout=10, headers=headers
        )
        return {"stream": ack.stream, "seq": ack.seq, "duplicate": bool(ack.duplicate)}
    finally:
        await nc.close()


def main() -> int:
    try:
        blob = json.load(sys.stdin)
    except ValueError as err:
        print(f"bad input to publish script: {err!r}", file=sys.stderr)
        return 2
    try:
        ack = asyncio.run(asyncio.wait_for(publish(blob), timeout=30))
    except Exception as err:  # connection, timeout, "no stream matches subject", ...
        print(f"{type(err).__name__}: {err}", file=sys.stderr)
        return 1
    print(json.dumps(ack))
    return 0


if __name__ == "__main__":
    sys.exit(main())
