#!/usr/bin/env bash
# Create the legion-ci virtual environment unless it is already there, and put it on PATH.
# Inputs arrive only as environment variables: PYTHON, VENV, REQUIREMENT.
set -euo pipefail
if [ -x "$VENV/bin/legion-ci" ] && "$VENV/bin/legion-ci" --version >/dev/null 2>&1; then
  echo "cache-hit=true" >>"$GITHUB_OUTPUT"
else
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --disable-pip-version-check --quiet "$REQUIREMENT"
  echo "cache-hit=false" >>"$GITHUB_OUTPUT"
fi
echo "$VENV/bin" >>"$GITHUB_PATH"
version="$("$VENV/bin/legion-ci" --version)"
echo "version=${version##* }" >>"$GITHUB_OUTPUT"
echo "legion-ci ${version##* } in $VENV"
