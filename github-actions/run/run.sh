#!/usr/bin/env bash
# `legion-ci run` or `legion-ci stage`, as the action's inputs say. legion-ci itself writes the
# step outputs, the job summary and the error annotations. Inputs arrive only as environment
# variables: PIPELINE_FILE, STAGE, RUN_ID, BUILDER.
set -euo pipefail
if ! command -v legion-ci >/dev/null 2>&1; then
  echo "::error title=legion-ci::legion-ci is not on PATH; run the github-actions/setup action first"
  exit 2
fi
# A newline in an input would end up as extra lines in the outputs and annotations.
BUILDER="${BUILDER:-}"
for name in PIPELINE_FILE STAGE RUN_ID BUILDER; do
  if [[ "${!name}" == *[[:cntrl:]]* ]]; then
    echo "::error title=legion-ci::the $name input holds a control character (a newline?)"
    exit 2
  fi
done
# Options first, then `--`: an input such as `--help` or `--dry-run` is an operand, never an
# option.
if [ -n "$STAGE" ]; then
  args=(stage --output json)
  if [ -n "$RUN_ID" ]; then args+=("--run-id=$RUN_ID"); fi
  if [ -n "$BUILDER" ]; then args+=("--builder=$BUILDER"); fi
  args+=(-- "$STAGE" "$PIPELINE_FILE")
else
  if [ -n "$RUN_ID" ]; then
    echo "::error title=legion-ci::the run-id input continues a run with one stage; set the stage input too"
    exit 2
  fi
  args=(run --output json)
  if [ -n "$BUILDER" ]; then args+=("--builder=$BUILDER"); fi
  args+=(-- "$PIPELINE_FILE")
fi
exec legion-ci "${args[@]}"
