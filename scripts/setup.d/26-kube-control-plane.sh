#!/usr/bin/env bash
# Kubernetes target tests against a real control plane (tests/kube_support.py): builds
# tools/kube-control-plane (kube-apiserver, kube-controller-manager, kube-scheduler and an
# embedded etcd from Kubernetes' own Go modules) with the machine's Go. The binary, the module
# cache and the build cache live under the CI cache; the binary is keyed by the module's
# go.mod, go.sum, main.go and `go version`, so only a new machine (or a new pin) pays the build
# (about TIME_PLACEHOLDER on 2 cores, see README).
set -euo pipefail
cd "$(dirname "$0")/../.."
CACHE="${LEGION_CI_CI_CACHE:-$HOME/.cache/legion-ci-ci}"
SRC=tools/kube-control-plane

if ! command -v go >/dev/null 2>&1; then
  echo "26-kube-control-plane: 'go' is not on PATH; the real-control-plane tests need Go >= 1.26 (the module proxy serves k8s.io/kubernetes); they will be skipped" >&2
  exit 1
fi
go_version="$(GOTOOLCHAIN=local go version)"
key="$(cat "$SRC/go.mod" "$SRC/go.sum" "$SRC/main.go" | { cat; echo "$go_version"; } | sha256sum | cut -c1-16)"
dir="$CACHE/kube-control-plane/$key"
bin="$dir/kube-control-plane"

if [ ! -x "$bin" ]; then
  echo "26-kube-control-plane: building $SRC with $go_version (a new machine's first build takes minutes)" >&2
  mkdir -p "$dir" "$CACHE/go/mod" "$CACHE/go/build"
  start="$(date +%s)"
  # GOTOOLCHAIN=local: never download another Go; -mod=readonly: go.sum is the pin.
  (cd "$SRC" && GOMODCACHE="$CACHE/go/mod" GOCACHE="$CACHE/go/build" GOTOOLCHAIN=local \
    GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0 \
    nice -n 10 go build -trimpath -ldflags='-s -w' -o "$bin.part" .)
  mv "$bin.part" "$bin"
  echo "26-kube-control-plane: built in $(($(date +%s) - start))s" >&2
fi
# It runs (its usage line, exit 2), not merely exists.
case "$("$bin" 2>&1 || true)" in
  "usage: kube-control-plane"*) ;;
  *) echo "26-kube-control-plane: $bin does not run" >&2; exit 1 ;;
esac
# A stable path for the tests, whatever the key.
ln -sfn "$dir" "$CACHE/kube-control-plane/current"
