# Run "$LEGION_CI_BIN" with "$@" (set by argv-from-env.sh, which runs first), stdout into
# $LEGION_CI_OUT (the JSON result) and stderr into $LEGION_CI_ERR, which is echoed afterwards.
# Exits with legion-ci's exit code. Credentials reach legion-ci only as environment variables.
scratch="$(dirname "$LEGION_CI_OUT")"
mkdir -p "$scratch"
# Results of earlier builds in this workspace are read as soon as written: keep a day's worth.
find "$scratch" -type f -mtime +0 -delete 2>/dev/null || true
rc=0
"$LEGION_CI_BIN" "$@" >"$LEGION_CI_OUT" 2>"$LEGION_CI_ERR" || rc=$?
cat "$LEGION_CI_ERR" >&2
exit "$rc"
