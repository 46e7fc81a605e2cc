# npm tools for the set-up, each in its own prefix under the CI cache keyed by its version;
# sourced by scripts/setup.d/*.sh after scripts/lib/apt.sh.
#   need_npm_tool CACHE PACKAGE VERSION BIN   install PACKAGE@VERSION into CACHE/PACKAGE-VERSION
#                                            unless its BIN is there, and link CACHE/PACKAGE to
#                                            it (a stable path for the tests, whatever the version)
need_npm_tool() {
  local cache="$1" package="$2" version="$3" bin="$4"
  local prefix="$cache/$package-$version"
  if [ ! -x "$prefix/bin/$bin" ]; then
    need_tools node npm
    mkdir -p "$prefix"
    npm install --silent --no-fund --no-audit --prefix "$prefix" -g \
      "$package@$version" >/dev/null
  fi
  ln -sfn "$prefix" "$cache/$package"
}
