# Sets "$@" to the argument list carried by LEGION_CI_ARGC and LEGION_CI_ARG_<n> (one
# environment variable per argument, so no value is ever parsed by the shell). LegionCli puts
# this text in front of each script it hands to `sh` with arguments.
set +x
set --
i=0
while [ "$i" -lt "$LEGION_CI_ARGC" ]; do
  # Only the variable's name is built here; its value is expanded, never evaluated.
  eval "set -- \"\$@\" \"\${LEGION_CI_ARG_$i}\""
  i=$((i + 1))
done
