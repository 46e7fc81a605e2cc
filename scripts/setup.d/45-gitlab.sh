#!/usr/bin/env bash
# The GitLab CI test's tool (no GitLab server can run here): gitlab-ci-local, which runs a
# .gitlab-ci.yml's jobs on this machine with its shell executor (tests/test_gitlab_ci_local.py),
# in a local npm prefix under the CI cache keyed by its version, and the rsync it copies the
# project with. The template's schema lint (check-jsonschema) comes with .venv's test extra.
# Idempotent: each part is checked before it is installed.
set -euo pipefail
cache="${LEGION_CI_CI_CACHE:-$HOME/.cache/legion-ci-ci}"
. "$(dirname "$0")/../lib/apt.sh"
. "$(dirname "$0")/../lib/npm.sh"

need_tools git rsync

version="4.65.1"   # the last line that runs on Node 20 (later ones need Node 22)
need_npm_tool "$cache" gitlab-ci-local "$version" gitlab-ci-local
"$cache/gitlab-ci-local-$version/bin/gitlab-ci-local" --version >/dev/null
