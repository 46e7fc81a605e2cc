#!/usr/bin/env bash
# Docker tests (docker-rest packager): a Docker engine, Debian's registry, htpasswd, and a
# Debian base image made with debootstrap (no image hub is reachable here). The base image's
# root file system is cached as a tarball outside the clone, keyed by its inputs; the tests
# `docker import` it into the dockerd they start.
set -euo pipefail
CACHE="${LEGION_CI_CI_CACHE:-$HOME/.cache/legion-ci-ci}"
. "$(dirname "$0")/../lib/apt.sh"
SUDO="$LEGION_SUDO"

need_tools dockerd containerd runc iptables docker-registry htpasswd debootstrap
# Building, smoke-testing and pushing without a Docker engine (docker-rest builder: buildah).
need_tools buildah podman skopeo

# The machine's configured Debian mirror (deb822 .sources first, then one-line lists).
mirror="$(awk '/^URIs:/ && $2 ~ /debian\/?$/ && $2 !~ /security/ {print $2; exit}' \
  /etc/apt/sources.list.d/*.sources 2>/dev/null || true)"
if [ -z "$mirror" ]; then
  mirror="$(awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; exit}}' \
    /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | head -n1 || true)"
fi
mirror="${mirror:-http://deb.debian.org/debian}"

suite=bookworm
include=python3,python3-venv,python3-pip,ca-certificates
key="$(printf '%s\n' "$suite" "$include" minbase | sha256sum | cut -c1-16)"
tarball="$CACHE/docker-base/debian-$suite-python-$key.tar"
if [ ! -s "$tarball" ]; then
  echo "20-docker: building the base image root with debootstrap ($mirror), about a minute" >&2
  mkdir -p "$CACHE/docker-base"
  root="$(mktemp -d "$CACHE/docker-base/root.XXXXXX")"
  trap '$SUDO rm -rf "$root"' EXIT
  $SUDO debootstrap --variant=minbase --include="$include" "$suite" "$root" "$mirror" >"$root.log" 2>&1 \
    || { tail -n 30 "$root.log" >&2; exit 1; }
  $SUDO rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  $SUDO tar -C "$root" -cf "$tarball.part" .
  mv "$tarball.part" "$tarball"
  rm -f "$root.log"
fi
# The tests read the tarball's path from here.
echo "$tarball" >"$CACHE/docker-base/current"
