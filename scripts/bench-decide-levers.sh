#!/usr/bin/env bash
# The decision API's levers (issue 32), each alone, then all: docs/bench/decide/<lever>/decide.json.
# Usage: scripts/bench-decide-levers.sh BUNDLE [RATES] [NAMES]   (RISKSTREAM_REDIS_URL: a real
# Redis; NAMES: only these runs, space-separated, e.g. "probe/plain-1 probe/all-1")
set -euo pipefail
cd "$(dirname "$0")/.."
B="$1"; RATES="${2:-50,100,200,300,400}"; ONLY="${3:-}"
export OMP_NUM_THREADS=1
run() { local name="$1"; shift
  [[ -z "$ONLY" || " $ONLY " == *" $name "* ]] || return 0
  echo "== $name (load average: $(cut -d' ' -f1-3 /proc/loadavg))"
  .venv/bin/riskstream bench decide --bundle "$B" --rates "$RATES" --seconds 8 \
    --out "docs/bench/decide/$name" "$@"
  echo "   (load average after: $(cut -d' ' -f1-3 /proc/loadavg))"
}
# The earlier service (pure-Python HTTP and loop, one process, one call at a time) and all the
# levers first, back to back; then each lever alone; last, the earlier load (httpx inside the
# bench process) on the earlier service, only up to 100/s: past its saturation one rate took
# over 10 minutes on the loaded machine.
run plain --loadgen raw --http h11 --loop asyncio --max-batch 1 --workers 1
run all --loadgen raw --http httptools --loop asyncio --max-batch 32 --workers 2
run httptools --loadgen raw --http httptools --loop asyncio --max-batch 1 --workers 1
run httptools-uvloop --loadgen raw --http httptools --loop uvloop --max-batch 1 --workers 1
run batch --loadgen raw --http h11 --loop asyncio --max-batch 32 --workers 1
run workers2 --loadgen raw --http h11 --loop asyncio --max-batch 1 --workers 2
run plain-httpx --rates 50,100 --loadgen httpx --http h11 --loop asyncio --max-batch 1 --workers 1
# The earlier service and all the levers again, alternating, each row with the Redis PING probe
# (added after the runs above: how long Redis itself took to answer during each rate).
for i in 1 2; do
  run "probe/plain-$i" --loadgen raw --http h11 --loop asyncio --max-batch 1 --workers 1
  run "probe/all-$i" --loadgen raw --http httptools --loop asyncio --max-batch 32 --workers 2
done
