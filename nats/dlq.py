"""Read and replay hookstream's dead letters with nats-py alone (no hookstream involved).

    python nats/dlq.py list   [--url nats://127.0.0.1:4222] [--tenant T] [--destination D]
    python nats/dlq.py replay [--url nats://127.0.0.1:4222] [--tenant T] [--destination D]

A dead letter is a message on the stream HS_DLQ, subject hs.dlq.<tenant>.<destination_id>;
its id is its stream sequence. Its body is the event envelope, its headers the event's
(Hs-Event-Type, Hs-Tenant, traceparent, ...) plus Hs-Dlq-Reason, Hs-Attempts,
Hs-Last-Status, Hs-Last-Error, Hs-Destination-Id, Hs-Original-Seq, Hs-First-Attempt-At and
Hs-Last-Attempt-At.

`list` prints one JSON object per dead letter. `replay` does what POST /v1/dlq/replay does:
publish the body to hs.to.<destination_id>.<event type> (that destination only) with the
event's headers, Nats-Msg-Id: replay-<id> (JetStream drops a second replay of the same
dead letter within the duplicate window) and Hs-Replay-Of: <id>; wait for the PubAck; only
then delete the dead letter. It prints {"replayed": n, "already_replayed": m}.
"""

import argparse
import asyncio
import json
import sys

import nats
from nats.js.errors import NotFoundError

DEAD_LETTER_HEADERS = {
    "hs-dlq-reason",
    "hs-attempts",
    "hs-last-status",
    "hs-last-error",
    "hs-destination-id",
    "hs-original-seq",
    "hs-first-attempt-at",
    "hs-last-attempt-at",
    "hs-replay-of",
}


async def dead_letters(js, subject):
    """Every dead letter on `subject` (wildcards allowed), oldest first, by direct get."""
    seq = 1
    while True:
        try:
            msg = await js.get_msg("HS_DLQ", seq=seq, subject=subject, next=True, direct=True)
        except NotFoundError:
            return
        yield msg
        seq = msg.seq + 1


async def main(args) -> None:
    nc = await nats.connect(args.url, connect_timeout=5, max_reconnect_attempts=1)
    js = nc.jetstream()
    subject = f"{args.prefix}.dlq.{args.tenant or '*'}.{args.destination or '*'}"
    replayed = already = 0
    try:
        async for msg in dead_letters(js, subject):
            headers = msg.headers or {}
            try:
                envelope = json.loads(msg.data)
            except ValueError:
                print(f"dead letter {msg.seq} is not an event (malformed_event)", file=sys.stderr)
                continue
            if args.command == "list":
                print(json.dumps({
                    "id": msg.seq,
                    "subject": msg.subject,
                    "event_id": envelope.get("id"),
                    "type": headers.get("Hs-Event-Type"),
                    "reason": headers.get("Hs-Dlq-Reason"),
                    "attempts": headers.get("Hs-Attempts"),
                    "last_status": headers.get("Hs-Last-Status"),
                }))
                continue
            destination = msg.subject.split(".")[-1]
            keep = {
                name: value
                for name, value in headers.items()
                if not name.lower().startswith("nats-") and name.lower() not in DEAD_LETTER_HEADERS
            }
            keep["Nats-Msg-Id"] = f"replay-{msg.seq}"
            keep["Hs-Replay-Of"] = str(msg.seq)
            target = f"{args.prefix}.to.{destination}.{envelope['type']}"
            ack = await js.publish(target, msg.data, headers=keep)
            # Deleted only once the re-publish is stored: a crash in between loses nothing.
            await js.delete_msg("HS_DLQ", msg.seq)
            if ack.duplicate:
                already += 1
            else:
                replayed += 1
        if args.command == "replay":
            print(json.dumps({"replayed": replayed, "already_replayed": already}))
    finally:
        await nc.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["list", "replay"])
    parser.add_argument("--url", default="nats://127.0.0.1:4222")
    parser.add_argument("--prefix", default="hs")
    parser.add_argument("--tenant")
    parser.add_argument("--destination")
    asyncio.run(main(parser.parse_args()))
    sys.exit(0)
