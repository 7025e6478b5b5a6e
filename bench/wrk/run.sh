#!/usr/bin/env bash
# Cross-checks `tessera bench` with wrk: drives a running `tessera serve` and the bare baseline with the same
# script, alternately, and prints wrk's figures for both.
#
#   bench/wrk/run.sh http://127.0.0.1:8080 <api-key> [seconds] [connections] [devices]
#
# Needs wrk (Debian: apt-get install wrk) and curl; starts the baseline from target/release/tessera (build it
# with `cargo build --release`) on port 8090 and stops it afterwards.
set -euo pipefail
url=${1:?the URL of a running tessera serve}
api_key=${2:?the API key tessera serve printed at first start}
seconds=${3:-10}
connections=${4:-64}
devices=${5:-1000}
here=$(cd "$(dirname "$0")" && pwd)
tessera="$here/../../target/release/tessera"

field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
account_token=$(curl -sf -XPOST -H "x-ubidots-apikey: $api_key" "$url/api/v1.6/auth/token" | field token)
organization=$(curl -sf -XPOST -H "authorization: Bearer $account_token" -H 'content-type: application/json' \
  -d '{"name": "wrk"}' "$url/v1/collections" | field id)
# One token sends every request: far beyond a collection token's default quota (500 in 5 s), so it gets a quota of
# its own that is never reached (counted on every request, as any limited token's, but never refused).
token=$(curl -sf -XPOST -H "authorization: Bearer $api_key" -H 'content-type: application/json' \
  -d '{"kind": "collection", "collection": "'"$organization"'", "name": "wrk", "quota": {"requests": 1000000, "window_seconds": 1}}' \
  "$url/v1/tokens" | field secret)

"$tessera" bench-baseline --http-addr 127.0.0.1:8090 >/dev/null &
baseline_pid=$!
trap 'kill $baseline_pid 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:8090/ && break; sleep 0.1; done

# The devices are created by their first reading: one pass before measuring.
wrk -t1 -c1 -d2s -s "$here/ingest.lua" "$url" -- "$token" "$devices" >/dev/null
for round in 1 2; do
  echo "== baseline, round $round"
  wrk -t2 -c"$connections" -d"${seconds}s" -s "$here/ingest.lua" http://127.0.0.1:8090 -- "$token" "$devices"
  echo "== Tessera, round $round"
  wrk -t2 -c"$connections" -d"${seconds}s" -s "$here/ingest.lua" "$url" -- "$token" "$devices"
done
