#!/usr/bin/env bash
# Refresh constraints.txt: the exact versions scripts/setup.sh installs (runtime and test
# tools), so that a new release upstream cannot turn CI red overnight.
#   scripts/refresh-constraints.sh        resolve the newest versions setup.py allows
# Then run scripts/test.sh, and commit constraints.txt when it passes.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$PYTHON" -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install -q --upgrade pip
"$tmp/venv/bin/python" -m pip install -q ".[test]"
{
  echo "# Exact versions of every PyPI package the set-up installs: .venv (scripts/setup.sh, pip install"
  echo "# -c constraints.txt). Airflow's"
  echo "# own venv is pinned by scripts/setup.d/airflow-requirements.txt (its pins conflict with MLflow's)."
  echo "# Made by scripts/refresh-constraints.sh on $(date -u +%Y-%m-%d) with $("$tmp/venv/bin/python" --version)."
  "$tmp/venv/bin/python" -m pip freeze --exclude-editable | grep -v -i '^legion-ci[= ]'
} > constraints.txt
echo "constraints.txt: $(grep -vc '^#' constraints.txt) pins"
