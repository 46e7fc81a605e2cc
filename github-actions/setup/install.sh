#!/usr/bin/env bash
# Create the legion-ci virtual environment unless it is already there, and put it on PATH.
# A local folder (LOCAL=true) is reinstalled on every run, without its dependencies, so the
# environment always holds the checkout as it is now. Inputs arrive only as environment
# variables: PYTHON, VENV, REQUIREMENT, LOCAL.
set -euo pipefail
# These come from the key step's outputs; a control character there means a forged line, and
# this script deletes $VENV: refuse rather than guess.
for name in PYTHON VENV REQUIREMENT LOCAL; do
  if [[ "${!name}" == *[[:cntrl:]]* ]]; then
    echo "::error title=legion-ci setup::$name holds a control character (a newline?)"
    exit 2
  fi
done
pip=("$VENV/bin/python" -m pip install --disable-pip-version-check --quiet)
# Jobs on one machine (self-hosted runners sharing a tool cache) take turns on the folder.
mkdir -p "$(dirname "$VENV")"
if command -v flock >/dev/null 2>&1; then
  exec 9>"$VENV.lock"
  flock 9
fi
if [ -x "$VENV/bin/legion-ci" ] && "$VENV/bin/legion-ci" --version >/dev/null 2>&1; then
  echo "cache-hit=true" >>"$GITHUB_OUTPUT"
  echo "reusing the legion-ci environment in $VENV"
  if [ "$LOCAL" = "true" ]; then
    "${pip[@]}" --no-deps --force-reinstall "$REQUIREMENT"
  fi
else
  echo "installing $REQUIREMENT into $VENV"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "${pip[@]}" "$REQUIREMENT"
  echo "cache-hit=false" >>"$GITHUB_OUTPUT"
fi
echo "$VENV/bin" >>"$GITHUB_PATH"
version="$("$VENV/bin/legion-ci" --version)"
echo "version=${version##* }" >>"$GITHUB_OUTPUT"
echo "legion-ci ${version##* } in $VENV"
