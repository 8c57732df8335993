#!/usr/bin/env python3
"""Where a process's CPU went, by what the code is about: reads `perf script -F ip,sym`
output (call stacks, innermost frame first) and gives each sample to the first category
whose frame pattern appears anywhere in its stack, in the order listed.

    perf script -i worker.data -F ip,sym > worker.script
    benches/profile/attribute.py worker worker.script
    perf script -i nats.data -F ip,sym > nats.script
    benches/profile/attribute.py nats nats.script
    benches/profile/attribute.py api worker.script     # ROLE=api profile.sh ingest_c32 ...

Used for the tables of docs/PERFORMANCE.md ("Where a delivery's CPU goes"). Categories
are checked in order: a sample of an HTTP send made by a delivery counts as "HTTP
request", not as "delivery task".
"""

import collections
import sys

CATEGORIES = {
    "worker": [
        ("router (pull, decide, publish, PubAcks, acks)", ["hookstream::router::"]),
        ("HTTP request (the client, in the delivery task)", ["Sender::send"]),
        ("HTTP connection task (hyper: socket writes and reads)", ["hyper::proto", "hyper_util", "hyper::client"]),
        ("attempt record (serialise, publish)", ["Deliverer::record"]),
        ("envelope parse", ["Deliverer::parse"]),
        ("request build (headers, signature)", ["request::build"]),
        ("flow control, operational events", ["hookstream::flow::", "hookstream::operations::"]),
        ("delivery task (spawn, ack, the rest of an attempt)", ["Deliverer::", "hookstream::delivery::dispatcher"]),
        ("NATS connection (protocol read and write)", ["async_nats::ConnectionHandler", "async_nats::connection"]),
        ("pull answers to drains", ["broker::pull"]),
        ("other async-nats", ["async_nats::"]),
        ("tokio scheduler and timers", ["tokio::"]),
    ],
    "api": [
        ("idempotency look-up (KV get)", ["Ingestor::recall"]),
        ("idempotency record (KV put, its PubAck)", ["kv::Store::put"]),
        ("envelope (build, serialise)", ["Ingestor::message"]),
        ("event publish and its PubAck", ["Ingestor::ingest_in_turn"]),
        ("request body parse", ["ApiJson", "api::json::parse"]),
        ("handler (the rest of post_event)", ["api::events::post_event"]),
        ("access check", ["access::guard", "api::access::check"]),
        ("other middleware (metrics, span, Retry-After, timeout)", ["api::edge", "count_requests", "trace_requests", "retry_after_on_503", "tower_http::"]),
        ("HTTP server (hyper: parse, write)", ["hyper::", "hyper_util::"]),
        ("NATS connection (protocol read and write)", ["async_nats::connect_with_options", "async_nats::connection", "async_nats::ConnectionHandler"]),
        ("other async-nats", ["async_nats::"]),
        ("tokio scheduler and timers", ["tokio::"]),
    ],
    "nats": [
        ("store a message (file store; a pwrite each)", ["StoreMsg"]),
        ("acks (a WorkQueue ack also removes the message)", ["processInboundAcks", "processAck"]),
        ("consumers find and send the next messages", ["loopAndGatherMsgs"]),
        ("pull requests", ["processNextMsgReq"]),
        ("stream loop: queued deliveries and PubAcks out", ["internalLoop"]),
        ("client protocol parse, inbound routing", ["processInboundClientMsg"]),
        ("client read loop (rest)", ["readLoop"]),
        ("client write loop (flush to sockets)", ["writeLoop"]),
        ("Go GC", ["gcBgMarkWorker", "runtime.gcDrain"]),
        ("Go scheduler", ["runtime."]),
    ],
}


def stacks(path):
    stack = []
    for line in open(path, errors="replace"):
        if not line.strip():
            if stack:
                yield stack
            stack = []
        else:
            stack.append(line.strip().split(" ", 1)[-1])
    if stack:
        yield stack


def main():
    kind, path = sys.argv[1], sys.argv[2]
    counts = collections.Counter()
    total = 0
    for stack in stacks(path):
        total += 1
        joined = "\n".join(stack)
        for name, patterns in CATEGORIES[kind]:
            if any(p in joined for p in patterns):
                counts[name] += 1
                break
        else:
            counts["other"] += 1
    for name, n in counts.most_common():
        print(f"{n * 100 / total:5.1f} %  {name}")
    print(f"{total} samples")


if __name__ == "__main__":
    main()
