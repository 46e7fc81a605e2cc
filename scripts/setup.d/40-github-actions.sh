#!/usr/bin/env bash
# The GitHub Actions tests' tools: act (runs the workflows, without Docker), the three linters
# (check-jsonschema, actionlint, zizmor) in .venv, node with `@actions/artifact` for act's
# artifact stand-ins (tests/act_support.py), cached outside the clone, and the gh CLI.
set -euo pipefail
cd "$(dirname "$0")/../.."
CACHE="${LEGION_CI_CI_CACHE:-$HOME/.cache/legion-ci-ci}/github-actions"

# act and the linters (check-jsonschema, actionlint, zizmor) come with .venv's test extra,
# pinned in constraints.txt.

# gh: the run action's pull request comment goes through it (tested against an emulator).
. scripts/lib/apt.sh
need_tools git node npm gh openssl

# @actions/artifact 2.3.2 is what actions/upload-artifact v4.6.2 bundles; @azure/storage-blob
# is held at 12.17.0 because later releases re-encode the signed upload URL, which act's
# artifact server then refuses ("Error unauthorized").
PACKAGE='{"private": true, "dependencies": {"@actions/artifact": "2.3.2", "@actions/core": "1.11.1"},
 "overrides": {"@azure/storage-blob": "12.17.0"}}'
mkdir -p "$CACHE"
if [ ! -f "$CACHE/package.json" ] || [ "$(cat "$CACHE/package.json")" != "$PACKAGE" ] \
  || [ ! -d "$CACHE/node_modules/@actions/artifact" ]; then
  printf '%s' "$PACKAGE" >"$CACHE/package.json"
  (cd "$CACHE" && npm install --no-audit --no-fund --silent >/dev/null)
fi
