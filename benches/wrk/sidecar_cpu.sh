#!/usr/bin/env bash
# The sidecar's CPU per 9-limit check under wrk (32 connections, one wrk thread), read
# from /proc/<pid>/stat around the run: benches/sidecar_cpu.rs's measurement with a C
# load generator, which takes less of a 2-CPU machine than the Rust one.
#
#   benches/wrk/sidecar_cpu.sh BINARY [memory|redis] [WORKER_THREADS] [SECONDS]
#
# Needs wrk (apt-get install wrk) and, for redis, redis-server. Never run by CI.
set -euo pipefail
bin=${1:?tollgate binary}; store=${2:-memory}; threads=${3:-1}; secs=${4:-10}
here=$(cd "$(dirname "$0")" && pwd)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
args=(--listen "127.0.0.1:$port" --worker-threads "$threads")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
if [ "$store" = redis ]; then
  rport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  redis-server --port "$rport" --save '' --appendonly no >/dev/null &
  pids+=($!)
  args+=(--redis-url "redis://127.0.0.1:$rport")
  sleep 0.5
fi
RUST_LOG=warn "$bin" "${args[@]}" >/dev/null 2>&1 &
tg=$!; pids+=($tg)
until curl -sf "http://127.0.0.1:$port/ready" >/dev/null; do sleep 0.1; done
limits='"rate_limit":{"request_max_limit":1000000000,"request_reset_duration":"1m","token_max_limit":1000000000000,"token_reset_duration":"1m"},"budgets":[{"max_limit":1000000.0,"reset_duration":"1d"}]'
for scope in '"model_name":"*","scope":"global"' '"model_name":"gpt-4o","scope":"virtual_key","scope_id":"vk-1"' '"model_name":"*","scope":"user","scope_id":"u-1"'; do
  curl -sf -X POST "http://127.0.0.1:$port/api/governance/model-configs" -d "{$scope,$limits}" >/dev/null
done
wrk -t1 -c32 -d2s -s "$here/check.lua" "http://127.0.0.1:$port/v1/check" >/dev/null
ticks() { awk '{print $14 + $15}' "/proc/$tg/stat"; }
before=$(ticks)
out=$(wrk -t1 -c32 -d"${secs}s" --latency -s "$here/check.lua" "http://127.0.0.1:$port/v1/check")
after=$(ticks)
requests=$(echo "$out" | awk '/requests in/ {print $1}')
hz=$(getconf CLK_TCK)
echo "$out" | grep -E "Latency|50%|99%|Requests/sec|Non-2xx" || true
awk -v t=$((after - before)) -v n="$requests" -v hz="$hz" -v s="$store" -v w="$threads" \
  'BEGIN { printf "%s store, %s worker thread(s): %d checks, sidecar CPU %.1f µs per check\n", s, w, n, t / hz * 1e6 / n }'
