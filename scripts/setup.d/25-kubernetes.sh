#!/usr/bin/env bash
# Kubernetes target tests (no API server can be installed here):
# - kubernetes-validate (the real Kubernetes JSON schemas, shipped in the package) comes with
#   .venv's test extra;
# - the kmock emulator in its own virtual environment under the CI cache, because kmock
#   registers a pytest plugin that needs pytest-asyncio, which the main .venv does without.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
CACHE="${LEGION_CI_CI_CACHE:-$HOME/.cache/legion-ci-ci}"
# Keyed by kmock's pin, so a new pin builds a new venv.
pin="$(grep -i '^kmock==' constraints.txt)"
KMOCK_VENV="$CACHE/kmock-venv-${pin#*==}"

if ! "$KMOCK_VENV/bin/python" -c 'import kmock' 2>/dev/null; then
  mkdir -p "$CACHE"
  rm -rf "$KMOCK_VENV"
  # The same interpreter as .venv (3.11+), found through the venv's own config.
  base="$(sed -n 's/^home = //p' .venv/pyvenv.cfg)/python3"
  [ -x "$base" ] || base=python3
  "$base" -m venv "$KMOCK_VENV"
  "$KMOCK_VENV/bin/python" -m pip install -q -c constraints.txt kmock
fi
"$KMOCK_VENV/bin/python" -c 'import kmock' >/dev/null
.venv/bin/python -c 'import kubernetes_validate' >/dev/null
# A stable path for the tests (tests/k8s_support.py), whatever the pin.
[ -L "$CACHE/kmock-venv" ] || rm -rf "$CACHE/kmock-venv"
ln -sfn "$KMOCK_VENV" "$CACHE/kmock-venv"
