#!/usr/bin/env bash
# The real parts the Jenkins shared library tests need (no Jenkins controller can run here):
#   - Debian's groovy 2.4 (the Groovy line Jenkins pipelines run on) on OpenJDK 17, to run
#     vars/*.groovy and src/ in the harness (tests/groovy/Harness.groovy);
#   - npm-groovy-lint (CodeNarc), in a local npm prefix under the CI cache, to lint the library.
# Idempotent: each part is checked before it is installed.
set -euo pipefail
cache="${LEGION_CI_CI_CACHE:-$HOME/.cache/legion-ci-ci}"
. "$(dirname "$0")/../lib/apt.sh"
. "$(dirname "$0")/../lib/npm.sh"

java_home=/usr/lib/jvm/java-17-openjdk-amd64
need_tools java17 groovy

# npm-groovy-lint ships CodeNarc and its jars inside the npm package; --noserver runs them
# with the machine's java, so nothing is downloaded at lint time.
lint_version="16.2.0"   # the last line that runs on Node 20
need_npm_tool "$cache" npm-groovy-lint "$lint_version" npm-groovy-lint
prefix="$cache/npm-groovy-lint-$lint_version"
JAVA_HOME="$java_home" groovy --version >/dev/null
"$prefix/bin/npm-groovy-lint" --version >/dev/null
# --version starts CodeNarc's server (on 127.0.0.1:7484), --noserver or not: stop it, so no
# Java process outlives the set-up. The lint test itself runs with --noserver.
"$prefix/bin/npm-groovy-lint" --killserver >/dev/null
