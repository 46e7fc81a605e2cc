#!/usr/bin/env bash
# The README's main job: set up, then run the example pipeline through every stage that
# exists, on the embedded defaults (sqlite MLflow store under pipelines/.legion/).
set -euo pipefail
cd "$(dirname "$0")/.."
export MLFLOW_DISABLE_TELEMETRY=true
scripts/setup.sh
exec .venv/bin/legion-ci run "${1:-pipelines/wine-full.yaml}"
