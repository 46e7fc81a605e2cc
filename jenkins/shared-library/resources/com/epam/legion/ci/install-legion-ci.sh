# Install $LEGION_CI_REQUIREMENT into the virtual environment $LEGION_CI_VENV, created with
# $LEGION_CI_PYTHON, unless it already holds that requirement (installed once per workspace).
# Extra pip arguments arrive as "$@", set by argv-from-env.sh, which runs first.
set -eu
marker="$LEGION_CI_VENV/.legion-ci-requirement"
wanted="$LEGION_CI_REQUIREMENT $*"
if [ -x "$LEGION_CI_VENV/bin/legion-ci" ] && [ -f "$marker" ] && [ "$(cat "$marker")" = "$wanted" ]; then
  echo "legion-ci: reusing $LEGION_CI_VENV ($LEGION_CI_REQUIREMENT)"
  exit 0
fi
echo "legion-ci: installing $LEGION_CI_REQUIREMENT into $LEGION_CI_VENV"
rm -f "$marker"
"$LEGION_CI_PYTHON" -m venv "$LEGION_CI_VENV"
"$LEGION_CI_VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$@" \
  "$LEGION_CI_REQUIREMENT"
[ -x "$LEGION_CI_VENV/bin/legion-ci" ] || {
  echo "legion-ci: $LEGION_CI_REQUIREMENT installed no legion-ci executable" >&2
  exit 1
}
printf '%s\n' "$wanted" >"$marker"
