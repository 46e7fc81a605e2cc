#!/usr/bin/env bash
# Create ./.venv (Python 3.11+) and install legion-ci into it, with test tools if asked.
#   scripts/setup.sh          runtime only
#   scripts/setup.sh test     runtime + test tools
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"

if ! "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
  echo "legion-ci needs Python 3.11 or newer as \$PYTHON (found: $("$PYTHON" --version 2>&1))" >&2
  exit 2
fi
if ! "$PYTHON" -m venv --help >/dev/null 2>&1 || ! "$PYTHON" -c 'import ensurepip' 2>/dev/null; then
  # Debian splits venv out of the interpreter package.
  . scripts/lib/apt.sh
  install_tool venv
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
extras=""
if [ "${1:-}" = "test" ]; then extras="[test]"; fi
# A second run with the same inputs returns at once: the stamp holds the hash of what decides
# the install (the pins, the package's declared requirements, the extras).
stamp=".venv/.legion-ci-installed"
inputs="$(cat constraints.txt setup.py pyproject.toml legion_ci/packaging/serve-requirements.txt \
  | sha256sum | cut -c1-16)${extras}"
have="$(cat "$stamp" 2>/dev/null || true)"
# A test install holds the runtime one too.
# Bytecode for the package, so that the first commands from a fresh clone (and every command
# where PYTHONDONTWRITEBYTECODE is set) do not compile it again: it is an editable install.
compile_package() { "$PWD/.venv/bin/python" -m compileall -q -j 0 legion_ci >/dev/null; }
if { [ "$have" = "$inputs" ] || [ "$have" = "${inputs}[test]" ]; } \
  && .venv/bin/python -c 'import legion_ci' 2>/dev/null; then
  compile_package
  exit 0
fi
# Exact versions from constraints.txt (scripts/refresh-constraints.sh makes it), so that a new
# release upstream cannot change what a clean clone installs.
echo "setup: installing legion-ci${extras} into .venv (pinned by constraints.txt; a few minutes the first time)" >&2
log="$(mktemp)"
if ! .venv/bin/python -m pip install --progress-bar off -e ".${extras}" -c constraints.txt >"$log" 2>&1; then
  grep -v -i "^WARNING: Location" "$log" | tail -30 >&2
  rm -f "$log"
  echo "setup: pip install failed (above)" >&2
  exit 3
fi
grep -E "^(Collecting|Successfully installed)" "$log" | sed -e 's/^/  pip: /' >&2 || true
rm -f "$log"
.venv/bin/python -c 'import legion_ci, mlflow' || { echo "legion-ci installation failed" >&2; exit 3; }
compile_package
echo "$inputs" >"$stamp"
