#!/usr/bin/env bash
# Kubernetes target tests: kubernetes-validate (the real Kubernetes JSON schemas, shipped in the
# package, for the --dry-run manifests) comes with .venv's test extra. The control plane the
# tests deploy to is built by 26-kube-control-plane.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
.venv/bin/python -c 'import kubernetes_validate' >/dev/null
