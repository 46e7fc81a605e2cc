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
  echo "# Exact versions for scripts/setup.sh (pip install -c constraints.txt)."
  echo "# Made by scripts/refresh-constraints.sh on $(date -u +%Y-%m-%d) with $("$tmp/venv/bin/python" --version)."
  "$tmp/venv/bin/python" -m pip freeze --exclude-editable | grep -v -i '^legion-ci[= ]'
} > constraints.txt
echo "constraints.txt: $(grep -vc '^#' constraints.txt) pins"
