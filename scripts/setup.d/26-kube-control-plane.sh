#!/usr/bin/env bash
# Kubernetes target tests against a real control plane (tests/kube_support.py): builds
# tools/kube-control-plane (kube-apiserver, kube-controller-manager, kube-scheduler and an
# embedded etcd from Kubernetes' own Go modules) with the machine's Go. The binary, the module
# cache and the build cache live under the CI cache; the binary is keyed by the module's
# go.mod, go.sum, main.go and `go version`, so only a new machine (or a new pin) pays the build
# (385 s on a new 2-core machine, beside the rest of the set-up; see README).
set -euo pipefail
cd "$(dirname "$0")/../.."
CACHE="${LEGION_CI_CI_CACHE:-$HOME/.cache/legion-ci-ci}"
SRC=tools/kube-control-plane

if ! command -v go >/dev/null 2>&1; then
  echo "26-kube-control-plane: 'go' is not on PATH: the Kubernetes tests build their control plane with Go >= 1.26 and the Go module proxy; install Go, or they fail" >&2
  exit 1
fi
go_version="$(GOTOOLCHAIN=local go version)"
# The release stamped in, as Kubernetes' own build does (hack/lib/version.sh), so /version
# and the components' logs say v1.37.2 rather than v0.0.0-master.
release="$(awk '$1 == "k8s.io/kubernetes" {print $2; exit}' "$SRC/go.mod")"
major="${release#v}"; minor="${major#*.}"; major="${major%%.*}"; minor="${minor%%.*}"
stamp=k8s.io/component-base/version
ldflags="-s -w -X $stamp.gitVersion=$release -X $stamp.gitMajor=$major -X $stamp.gitMinor=$minor -X $stamp.gitTreeState=clean"
key="$(cat "$SRC/go.mod" "$SRC/go.sum" "$SRC/main.go" | { cat; echo "$go_version $ldflags"; } | sha256sum | cut -c1-16)"
dir="$CACHE/kube-control-plane/$key"
bin="$dir/kube-control-plane"

if [ ! -x "$bin" ]; then
  echo "26-kube-control-plane: building $SRC with $go_version (a new machine's first build takes minutes)" >&2
  mkdir -p "$dir" "$CACHE/go/mod" "$CACHE/go/build"
  start="$(date +%s)"
  # GOTOOLCHAIN=local: never download another Go; -mod=readonly: go.sum is the pin.
  (cd "$SRC" && GOMODCACHE="$CACHE/go/mod" GOCACHE="$CACHE/go/build" GOTOOLCHAIN=local \
    GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0 \
    nice -n 10 go build -trimpath -ldflags="$ldflags" -o "$bin.part" .)
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
