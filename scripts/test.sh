#!/usr/bin/env bash
# Lint, type-check and run the tests (unit, doctests, integration against a real broker and Redis:
# the session fixtures start Tansu and, unless REDIS_URL is set, an embedded Valkey).
#   bash scripts/test.sh            the full suite (what CI runs), slowest tests listed at the end
#   bash scripts/test.sh --quick    the development loop: everything not marked slow or fault
# Any other argument goes to pytest (e.g. a path or -k EXPR).
#
# The tests run on RISKSTREAM_TEST_JOBS pytest-xdist workers (default: the host's cores; 1 = no
# xdist), a test file per worker at a time (its module fixtures built once). The fault tests
# (they kill and restart workers, Redis and the broker, and wait on recovery) run afterwards on
# their own, one at a time: their deadlines assume no other test competes for the cores.
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0
marks=""  # a -m EXPR given: combined with each phase's own
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    -m) marks="$2"; shift ;;
    *) args+=("$1") ;;
  esac
  shift
done
with() { if [ -n "$marks" ]; then echo "($marks) and ($1)"; else echo "$1"; fi; }
# The host's cores: GNU nproc reports OMP_NUM_THREADS instead when it is set (a shell that set
# it to 1 for a benchmark ran the whole suite on one worker).
cores=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)
jobs="${RISKSTREAM_TEST_JOBS:-$cores}"
xdist=()
[ "$jobs" -gt 1 ] && xdist=(-n "$jobs" --dist loadfile)
# torch and ONNX Runtime threads: the cores shared out between the workers. Each worker taking
# every core made the training tests several times slower (threads spinning on busy cores).
threads=$(( cores / jobs ))
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(( threads > 0 ? threads : 1 ))}"
# The tiny world, model and bundle (tests/conftest.py) built once for the whole run, both
# phases: a folder of this run's own, removed at the end (unless the caller named one).
if [ -z "${RISKSTREAM_TEST_CACHE:-}" ]; then
  RISKSTREAM_TEST_CACHE="$(mktemp -d -t riskstream-tests.XXXXXX)"
  trap 'rm -rf "$RISKSTREAM_TEST_CACHE"' EXIT
  export RISKSTREAM_TEST_CACHE
fi
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
if [ "$quick" = 1 ]; then
  .venv/bin/pytest ${xdist[@]+"${xdist[@]}"} -m "$(with "not slow and not fault")" \
    ${args[@]+"${args[@]}"}
  exit
fi
# Both phases run even when the first fails, so one run shows every failure. Exit code 5 is
# "no test selected": fine for one phase (e.g. a path with fault tests only), not for both.
rc=0
.venv/bin/pytest ${xdist[@]+"${xdist[@]}"} -m "$(with "not fault")" ${args[@]+"${args[@]}"} || rc=$?
fault_rc=0
.venv/bin/pytest -m "$(with fault)" ${args[@]+"${args[@]}"} || fault_rc=$?
if [ "$rc" = 5 ] && [ "$fault_rc" = 5 ]; then exit 5; fi
[ "$rc" = 5 ] && rc=0
[ "$fault_rc" = 5 ] && fault_rc=0
[ "$rc" = 0 ] && rc=$fault_rc
exit "$rc"
