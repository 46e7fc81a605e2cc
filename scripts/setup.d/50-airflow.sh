#!/usr/bin/env bash
# Apache Airflow in a virtual environment of its own, for tests/test_airflow*.py. It is kept
# out of .venv so that neither Airflow's pins nor MLflow's constrain the other: the tests run
# Airflow's python with this clone's legion_ci on PYTHONPATH, and the operators run .venv's
# legion-ci. Built once per pin set (airflow-requirements.txt) and Python version, outside
# the clone; a second run returns at once.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-python3}"
requirements=scripts/setup.d/airflow-requirements.txt
# Keep in step with tests/airflow_support.py, which finds the venv the same way.
pyver="$("$PYTHON" -c 'import sys; print("python%d.%d" % sys.version_info[:2])')"
key="$({ cat "$requirements"; printf '%s' "$pyver"; } | sha256sum | cut -c1-16)"
venv="${LEGION_CI_CI_CACHE:-$HOME/.cache/legion-ci-ci}/airflow-venv-$key"
if [ -f "$venv/.complete" ]; then
  exit 0
fi
echo "installing Apache Airflow into $venv (a few minutes, once)" >&2
rm -rf "$venv"
mkdir -p "$(dirname "$venv")"
"$PYTHON" -m venv "$venv"
export PIP_DISABLE_PIP_VERSION_CHECK=1
"$venv/bin/python" -m pip install -q -r "$requirements" 2>&1 \
  | grep -v -i -E "^WARNING: Location|^\s*$" || true
"$venv/bin/python" -c 'import airflow, airflow.sdk' || {
  echo "Airflow installation into $venv failed" >&2
  exit 3
}
touch "$venv/.complete"
