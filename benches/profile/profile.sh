#!/bin/bash
# Profiles the worker and nats-server of one bench scenario (a drain) with perf, then
# prints where each one's CPU went (attribute.py). Release build first:
#   cargo build --release --bins --benches
#   benches/profile/profile.sh drain_1_routed target/profile-drain-1 [BENCH_SCALE]
# DELAY (s, default 2): how long after the worker starts the recording begins;
# DUR (s, default 5): how long it records. HSBIN: the hookstream binary to run.
# ROLE (default worker): the process profiled beside nats-server, e.g. api for ingest_c32.
set -u
cd "$(dirname "$0")/../.."
SCENARIO=$1
OUT=$2
SCALE=${3:-5}
HSBIN=${HSBIN:-$PWD/target/release/hookstream}
BENCH=$(ls -t target/release/deps/e2e-* | grep -v '\.d$' | head -1)
mkdir -p "$OUT"
HOOKSTREAM_TEST_NATS_SERVER=$PWD/.tools/venv/bin/nats-server HOOKSTREAM_BENCH_BIN=$HSBIN \
  BENCH_SCALE=$SCALE BENCH_ONLY=$SCENARIO "$BENCH" > "$OUT/bench.txt" 2>&1 &
BENCH_PID=$!
ROLE=${ROLE:-worker}
WORKER=
for _ in $(seq 1 600); do
  WORKER=$(pgrep -f "$HSBIN $ROLE" | head -1)
  [ -n "$WORKER" ] && break
  sleep 0.1
done
sleep "${DELAY:-2}"
# The bench's own nats-server (its newest child), not another one on the machine.
NATS=$(pgrep -n -P "$BENCH_PID" -f nats-server)
# Go keeps frame pointers; Rust stacks need DWARF unwinding (release has debug = 1).
perf record -F 1999 -g -o "$OUT/nats.data" -p "$NATS" -- sleep "${DUR:-5}" 2>/dev/null &
perf record -F 1999 --call-graph dwarf,16384 -o "$OUT/worker.data" -p "$WORKER" -- sleep "${DUR:-5}" 2>/dev/null &
wait %2 %3 2>/dev/null
wait $BENCH_PID
perf script -i "$OUT/worker.data" -F ip,sym 2>/dev/null > "$OUT/worker.script"
perf script -i "$OUT/nats.data" -F ip,sym 2>/dev/null > "$OUT/nats.script"
echo "== worker"; benches/profile/attribute.py worker "$OUT/worker.script"
echo "== nats-server"; benches/profile/attribute.py nats "$OUT/nats.script"
