#!/usr/bin/env bash
# The README's test command: set up, lint, run every test (Docker-free today; real MLflow
# stores and servers, real moto S3 emulator and HTTP servers, all on 127.0.0.1).
set -euo pipefail
cd "$(dirname "$0")/.."
export MLFLOW_DISABLE_TELEMETRY=true
scripts/setup.sh test
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest "$@"
