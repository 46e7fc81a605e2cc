#!/usr/bin/env bash
# The glob of the pipeline's run records, relative to the repository (actions/cache keys its
# entries by the path strings, so they must not depend on where the runner keeps the work
# tree). Records only: the trend and `baseline: {run: latest}` read nothing else, and model
# binaries would bloat the cache. An unreadable pipeline prints nothing here; the run step
# reports it. Inputs arrive only as environment variables: PIPELINE_FILE.
set -uo pipefail
# Every line written to $GITHUB_OUTPUT must stay one line: a control character (a newline) in
# the pipeline path or its workspace would add outputs of its own. Refused, and nothing cached.
has_control() { [[ "$1" == *[[:cntrl:]]* ]]; }
if has_control "$PIPELINE_FILE"; then
  echo "::warning title=legion-ci::the pipeline-file input holds a control character; run records are not cached"
  exit 0
fi
if workspace="$(legion-ci report workspace -- "$PIPELINE_FILE" 2>/dev/null)"; then
  # legion-ci's own interpreter: portable where `realpath --relative-to` is not (macOS).
  python="$(dirname "$(command -v legion-ci)")/python"
  relative="$("$python" -c 'import os, sys; print(os.path.relpath(*sys.argv[1:]))' \
    "$workspace" "$GITHUB_WORKSPACE")"
  if has_control "$relative"; then
    echo "::warning title=legion-ci::the workspace path holds a control character; run records are not cached"
    exit 0
  fi
  echo "records=$relative/runs/*/record.json" >>"$GITHUB_OUTPUT"
fi
