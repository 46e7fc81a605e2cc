#!/usr/bin/env bash
# The README's test command: set up, lint, run every test. Each scripts/setup.d/*.sh installs
# the real parts one group of tests needs (Docker, a registry, Groovy, act, Airflow, ...);
# the tests themselves start and stop the services, all on 127.0.0.1.
# The 11-minute server soak (tests/test_soak.py) runs beside the suite; LEGION_SKIP_SOAK=1
# leaves it out (handy when running a few tests: scripts/test.sh tests/test_runner.py).
set -euo pipefail
cd "$(dirname "$0")/.."
export MLFLOW_DISABLE_TELEMETRY=true
scripts/setup.sh test
for part in scripts/setup.d/*.sh; do
  [ -e "$part" ] || continue
  echo "setup: $part" >&2
  bash "$part"
done
.venv/bin/ruff check .
.venv/bin/ruff format --check .

soak_pid=""
soak_log="$(mktemp)"
trap 'rm -f "$soak_log"; [ -z "$soak_pid" ] || kill "$soak_pid" 2>/dev/null || true' EXIT
if [ "${LEGION_SKIP_SOAK:-0}" != 1 ]; then
  .venv/bin/python -m pytest -q -s -m soak tests/test_soak.py >"$soak_log" 2>&1 &
  soak_pid=$!
fi
set +e
.venv/bin/python -m pytest "$@"
suite=$?
soak=0
if [ -n "$soak_pid" ]; then
  wait "$soak_pid"
  soak=$?
  soak_pid=""
  echo "---- server soak (tests/test_soak.py, run beside the suite) ----"
  cat "$soak_log"
fi
[ "$suite" -eq 0 ] && [ "$soak" -eq 0 ]
