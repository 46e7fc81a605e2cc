#!/usr/bin/env bash
# Kubernetes target tests (no API server can be installed here):
# - kubernetes-validate (the real Kubernetes JSON schemas, shipped in the package) in .venv;
# - the kmock emulator in its own virtual environment under the CI cache, because kmock
#   registers a pytest plugin that needs pytest-asyncio, which the main .venv does without.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
CACHE="${LEGION_CI_CI_CACHE:-$HOME/.cache/legion-ci-ci}"
KMOCK_VENV="$CACHE/kmock-venv"

if ! .venv/bin/python -c 'import kubernetes_validate' 2>/dev/null; then
  .venv/bin/python -m pip install -q 'kubernetes-validate>=1.33'
fi
if ! "$KMOCK_VENV/bin/python" -c 'import kmock' 2>/dev/null; then
  mkdir -p "$CACHE"
  rm -rf "$KMOCK_VENV"
  # The same interpreter as .venv (3.11+), found through the venv's own config.
  base="$(sed -n 's/^home = //p' .venv/pyvenv.cfg)/python3"
  [ -x "$base" ] || base=python3
  "$base" -m venv "$KMOCK_VENV"
  "$KMOCK_VENV/bin/python" -m pip install -q 'kmock>=0.8'
fi
"$KMOCK_VENV/bin/python" -c 'import kmock' >/dev/null
.venv/bin/python -c 'import kubernetes_validate' >/dev/null
