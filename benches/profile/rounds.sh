#!/bin/bash
# Interleaved rounds: every binary runs the same scenarios once per round, so that machine
# noise falls on all of them alike (docs/PERFORMANCE.md: "what each change bought").
#   cargo build --release --bins --benches
#   ONLY=raw_http,ingest_c32 ROUNDS=3 benches/profile/rounds.sh /tmp/hs-before /tmp/hs-after
# Prints one line per scenario and binary: its JSON figures.
set -u
cd "$(dirname "$0")/../.."
BENCH=$(ls -t target/release/deps/e2e-* | grep -v '\.d$' | head -1)
for r in $(seq 1 "${ROUNDS:-3}"); do
  for bin in "$@"; do
    HOOKSTREAM_TEST_NATS_SERVER=$PWD/.tools/venv/bin/nats-server HOOKSTREAM_BENCH_BIN=$bin \
      BENCH_SCALE=${SCALE:-1} BENCH_ONLY=${ONLY:-raw_http,ingest_c32} "$BENCH" 2>&1 |
      awk -v r="$r" -v b="$bin" '/^== /{s=$2} /^   \{/{print "round " r, b, s, $1}'
  done
done
