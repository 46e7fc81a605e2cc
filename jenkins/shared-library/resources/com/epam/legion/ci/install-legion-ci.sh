# Install $LEGION_CI_REQUIREMENT into the virtual environment $LEGION_CI_VENV, created with
# $LEGION_CI_PYTHON, unless it already holds that requirement (installed once per workspace).
# Extra pip arguments come as LEGION_CI_ARGC / LEGION_CI_ARG_<n>, like run-legion-ci.sh's.
set +x
set -eu
set --
i=0
while [ "$i" -lt "$LEGION_CI_ARGC" ]; do
  eval "set -- \"\$@\" \"\${LEGION_CI_ARG_$i}\""
  i=$((i + 1))
done
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
