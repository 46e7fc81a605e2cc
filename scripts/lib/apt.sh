# Debian packages for the set-up, from scripts/setup.d/system-packages.tsv; sourced by
# scripts/setup.sh and scripts/setup.d/*.sh.
#   need_tools TOOL...   install, one at a time, the package of each TOOL whose check fails
#   install_tool TOOL    install TOOL's package now (the caller made its own check)
# Root runs apt-get itself, anyone else through sudo.
LEGION_APT_TABLE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/setup.d/system-packages.tsv"
LEGION_SUDO=""; [ "$(id -u)" -eq 0 ] || LEGION_SUDO="sudo"
_legion_apt_updated=0
# Another apt (a second set-up on the same agent, unattended-upgrades) holds dpkg's lock for a
# while: wait for it instead of failing the set-up.
LEGION_APT_LOCK=(-o DPkg::Lock::Timeout=600)

_legion_apt_row() {
  awk -v tool="$1" '$1 == tool && $1 !~ /^#/ {print $2 "\t" $3; found = 1; exit} END {exit !found}' \
    "$LEGION_APT_TABLE"
}

_legion_tool_present() {
  local check="$2"
  case "$check" in
    cmd) command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ] ;;
    /*) [ -e "$check" ] ;;
    *) return 1 ;;
  esac
}

_legion_apt_update_once() {
  [ "$_legion_apt_updated" -eq 1 ] && return 0
  $LEGION_SUDO apt-get "${LEGION_APT_LOCK[@]}" update -qq
  _legion_apt_updated=1
}

install_tool() {
  local row packages pkg chosen=""
  row="$(_legion_apt_row "$1")" || { echo "setup: '$1' is not in $LEGION_APT_TABLE" >&2; return 3; }
  packages="${row#*$'\t'}"
  _legion_apt_update_once
  for pkg in ${packages//|/ }; do
    # Simulated first (no root needed, nothing changes): a package that conflicts with what
    # the machine has is passed over instead of failing the whole set-up.
    if apt-get install -s -qq "$pkg" >/dev/null 2>&1; then chosen="$pkg"; break; fi
  done
  if [ -z "$chosen" ]; then
    echo "setup: none of the packages for '$1' ($packages) can be installed on this machine;" \
      "apt-get install -s $pkg says:" >&2
    apt-get install -s -qq "$pkg" 2>&1 | tail -n 5 >&2
    return 3
  fi
  echo "setup: installing $chosen (for $1)" >&2
  DEBIAN_FRONTEND=noninteractive $LEGION_SUDO apt-get "${LEGION_APT_LOCK[@]}" install -y -qq --no-install-recommends \
    "$chosen" >/dev/null
}

need_tools() {
  local tool row
  for tool in "$@"; do
    row="$(_legion_apt_row "$tool")" || { echo "setup: '$tool' is not in $LEGION_APT_TABLE" >&2; return 3; }
    _legion_tool_present "$tool" "${row%%$'\t'*}" || install_tool "$tool"
  done
}

# apt's package lists, which `apt-get install -s` (tests/test_setup_packages.py) reads: a
# machine image may ship without them.
ensure_apt_lists() {
  compgen -G "/var/lib/apt/lists/*_Packages*" >/dev/null || _legion_apt_update_once
}
