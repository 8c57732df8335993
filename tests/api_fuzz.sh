#!/usr/bin/env bash
# `make api-fuzz`: schemathesis sends requests generated from /openapi.json to a live
# hookstream (its own nats-server, an admin key) and fails on any 5xx or any status code
# the document does not list. Bounded: a fixed number of examples per operation and a
# fixed seed, so a run takes about a minute and repeats itself.
#   tests/api_fuzz.sh <hookstream binary> <nats-server> <schemathesis> [examples]
set -euo pipefail
BIN=$1
NATS=$2
SCHEMATHESIS=$3
EXAMPLES=${4:-${API_FUZZ_EXAMPLES:-25}}
DIR=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
NATS_PORT=$(free_port)
HTTP_PORT=$(free_port)
KEY="fuzz-admin-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"

"$NATS" -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$DIR/js" >"$DIR/nats.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$NATS_PORT") 2>/dev/null; then break; fi
  sleep 0.1
done
# A clean environment: a developer's HOOKSTREAM_* must not reach the service.
env -i PATH="$PATH" \
  HOOKSTREAM_NATS_URL="nats://127.0.0.1:$NATS_PORT" \
  HOOKSTREAM_LISTEN="127.0.0.1:$HTTP_PORT" \
  HOOKSTREAM_ADMIN_API_KEYS="$KEY" \
  HOOKSTREAM_ALLOW_PRIVATE_NETWORKS=true \
  RUST_LOG=warn \
  "$BIN" serve >"$DIR/hookstream.log" 2>&1 &
PIDS+=($!)

BASE="http://127.0.0.1:$HTTP_PORT"
for _ in $(seq 300); do
  if curl -fs "$BASE/readyz" >/dev/null 2>&1; then break; fi
  sleep 0.1
done
curl -fs "$BASE/readyz" >/dev/null || { cat "$DIR/hookstream.log" >&2; echo "hookstream did not get ready" >&2; exit 1; }

status=0
"$SCHEMATHESIS" run "$BASE/openapi.json" \
  --header "Authorization: Bearer $KEY" \
  --checks not_a_server_error,status_code_conformance \
  --phases examples,coverage,fuzzing \
  --max-examples "$EXAMPLES" \
  --seed 20261201 \
  --workers 2 \
  --request-timeout 30 \
  --generation-database none \
  --no-color || status=$?
if [[ $status -ne 0 ]]; then
  echo "--- hookstream log (warnings and errors) ---" >&2
  tail -50 "$DIR/hookstream.log" >&2
fi
exit $status
