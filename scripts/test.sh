#!/usr/bin/env bash
# The README's test command: set up, lint, run every test. Each scripts/setup.d/*.sh installs
# the real parts one group of tests needs (Docker, a registry, Groovy, act, Airflow, ...);
# the tests themselves start and stop the services, all on 127.0.0.1.
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
exec .venv/bin/python -m pytest "$@"
