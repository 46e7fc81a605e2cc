#!/usr/bin/env bash
# The README's test command: set up, lint, run every test. Needs root (or sudo): the set-up
# installs Debian packages and the tests start dockerd and mount tmpfs.
#   scripts/test.sh                     the full run (.ci/run): set-up, ruff, the 11-minute
#                                       server soak alone, the -m isolated tests, the suite
#   scripts/test.sh tests/test_x.py -k y   a few tests: the same set-up (a second run costs
#                                       seconds), then pytest with these arguments only
# Each scripts/setup.d/*.sh installs the real parts one group of tests needs (Docker, a
# registry, Groovy, act, Airflow, ...); the tests themselves start and stop the services, all
# on 127.0.0.1. The soak runs before the suite, alone, so its load phase does not starve the
# suite's timing-sensitive tests; LEGION_SKIP_SOAK=1 leaves it out of a full run.
set -euo pipefail
cd "$(dirname "$0")/.."
export MLFLOW_DISABLE_TELEMETRY=true
full=1
for arg in "$@"; do
  # Options alone (-q, -x) still make a full run; a test path or -k/-m picks a few tests.
  case "$arg" in -q | -x | -v | -ra | --quiet | --verbose) ;; *) full=0 ;; esac
done

# The Kubernetes control plane's build is a new machine's longest set-up step (CPU-bound,
# minutes) and needs nothing the others install: it runs beside them from the start, in a
# session of its own (stopped with its go build if the set-up fails), and is waited for after
# the last of them. Once built it costs well under a second.
kube_part=scripts/setup.d/26-kube-control-plane.sh
kube_log="$(mktemp)"
setsid -w bash "$kube_part" >"$kube_log" 2>&1 &
kube_pid=$!
# Its group; or, in the instant before setsid has made that group, the process itself.
trap 'kill -- -"$kube_pid" 2>/dev/null || kill "$kube_pid" 2>/dev/null || true; rm -f "$kube_log"' EXIT

scripts/setup.sh test
. scripts/lib/apt.sh
ensure_apt_lists
for part in scripts/setup.d/*.sh; do
  [ -e "$part" ] || continue
  [ "$full" -eq 1 ] && echo "setup: $part" >&2
  [ "$part" = "$kube_part" ] && continue
  bash "$part"
done
[ "$full" -eq 1 ] && echo "setup: $kube_part (started first, waited for last)" >&2
kube_status=0
wait "$kube_pid" || kube_status=$?
trap - EXIT
cat "$kube_log" >&2
rm -f "$kube_log"
[ "$kube_status" -eq 0 ] || exit "$kube_status"

if [ "$full" -eq 0 ]; then
  exec .venv/bin/python -m pytest "$@"
fi

.venv/bin/ruff check .
.venv/bin/ruff format --check .
set +e
soak=0
if [ "${LEGION_SKIP_SOAK:-0}" != 1 ]; then
  echo "---- server soak (tests/test_soak.py: 60 s at 64 connections, then 10 minutes) ----"
  .venv/bin/python -m pytest -q -s -m soak tests/test_soak.py
  soak=$?
fi
echo "---- tests that need a pytest process of their own (-m isolated) ----"
.venv/bin/python -m pytest -q -m isolated
isolated=$?
.venv/bin/python -m pytest "$@"
suite=$?
[ "$suite" -eq 0 ] && [ "$soak" -eq 0 ] && [ "$isolated" -eq 0 ]
