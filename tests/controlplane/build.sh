#!/usr/bin/env bash
# Builds etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl and kwok
# from Go modules and caches them by version outside the work tree. Idempotent: a second
# run finds the cached binaries and returns at once.
#
#   tests/controlplane/build.sh          build what is missing, print the bin directory
#
# Environment:
#   IMAGEDRIFT_CACHE   cache root (default: $XDG_CACHE_HOME/imagedrift or ~/.cache/imagedrift)
#   GO                 the go command (default: go)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

cache_root="${IMAGEDRIFT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/imagedrift}"
bin="$cache_root/controlplane/kube-$KUBE_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION/bin"
go_cmd="${GO:-go}"
kube_tools=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd)

missing=()
for tool in "${kube_tools[@]}" kwok; do
  [ -x "$bin/$tool" ] || missing+=("$tool")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "$bin"
  exit 0
fi

command -v "$go_cmd" >/dev/null || { echo "build.sh: Go is required to build the control plane (missing: ${missing[*]})" >&2; exit 1; }
mkdir -p "$bin"
export GOTOOLCHAIN=local GOFLAGS=-mod=readonly CGO_ENABLED=0
minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"

start=$(date +%s)
# One package at a time: the machine has two cores and linking these in parallel
# costs several GB each.
for tool in "${missing[@]}"; do
  case "$tool" in
    etcd) pkg=go.etcd.io/etcd/server/v3; dir=kube ;;
    kwok) pkg=sigs.k8s.io/kwok/cmd/kwok; dir=kwok ;;
    *) pkg=k8s.io/kubernetes/cmd/$tool; dir=kube ;;
  esac
  echo "build.sh: building $tool ($pkg)" >&2
  (cd "$here/$dir" && "$go_cmd" build -trimpath -ldflags "$ldflags" -o "$bin/$tool.tmp" "$pkg")
  mv "$bin/$tool.tmp" "$bin/$tool"
done
echo "build.sh: built ${missing[*]} in $(( $(date +%s) - start ))s" >&2
echo "$bin"
