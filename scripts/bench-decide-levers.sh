#!/usr/bin/env bash
# The decision API's levers (issue 32), each alone, then all: docs/bench/decide/<lever>/decide.json.
# Usage: scripts/bench-decide-levers.sh BUNDLE [RATES]   (RISKSTREAM_REDIS_URL: a real Redis)
set -euo pipefail
cd "$(dirname "$0")/.."
B="$1"; RATES="${2:-50,100,200,300,400}"
export OMP_NUM_THREADS=1
run() { local name="$1"; shift
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
