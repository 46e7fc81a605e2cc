# Run "$LEGION_CI_BIN" with the argument list carried by LEGION_CI_ARGC and LEGION_CI_ARG_<n>
# (one environment variable per argument, so no value is ever parsed by the shell), stdout into
# $LEGION_CI_OUT (the JSON result) and stderr into $LEGION_CI_ERR, which is echoed afterwards.
# Exits with legion-ci's exit code. Credentials reach legion-ci only as environment variables.
set +x
set --
i=0
while [ "$i" -lt "$LEGION_CI_ARGC" ]; do
  # Only the variable's name is built here; its value is expanded, never evaluated.
  eval "set -- \"\$@\" \"\${LEGION_CI_ARG_$i}\""
  i=$((i + 1))
done
mkdir -p "$(dirname "$LEGION_CI_OUT")"
rc=0
"$LEGION_CI_BIN" "$@" >"$LEGION_CI_OUT" 2>"$LEGION_CI_ERR" || rc=$?
cat "$LEGION_CI_ERR" >&2
exit "$rc"
