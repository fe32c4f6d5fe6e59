#!/usr/bin/env bash
# Builds etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl and kwok
# (the control plane), kubelet, containerd and containerd-shim-runc-v2 (the tests' real
# node), and Flux's source-controller and kustomize-controller (GitOps tests) from Go modules
# and caches them by version outside the work tree. Idempotent: a second run finds the
# cached binaries and returns at once.
#
#   tests/controlplane/build.sh               build what is missing of all three, print the
#                                             control plane's bin directory
#   tests/controlplane/build.sh controlplane  only the control plane, print its bin directory
#   tests/controlplane/build.sh node          only the node, print its bin directory
#   tests/controlplane/build.sh flux          only Flux, print its bin directory; the CRDs of
#                                             both controllers are in ../crd next to it
#
# Environment:
#   IMAGEDRIFT_CACHE   cache root (default: $XDG_CACHE_HOME/imagedrift or ~/.cache/imagedrift)
#   GO                 the go command (default: go)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

cache_root="${IMAGEDRIFT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/imagedrift}"
cp_bin="$cache_root/controlplane/kube-$KUBE_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION/bin"
node_bin="$cache_root/node/kube-$KUBE_VERSION-containerd-$CONTAINERD_VERSION/bin"
flux_dir="$cache_root/flux/source-$FLUX_SOURCE_VERSION-kustomize-$FLUX_KUSTOMIZE_VERSION"
flux_bin="$flux_dir/bin"
go_cmd="${GO:-go}"
cp_tools=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd kwok)
node_tools=(kubelet containerd containerd-shim-runc-v2)
flux_tools=(source-controller kustomize-controller)

what="${1:-all}"
case "$what" in
  all) wanted=("${cp_tools[@]}" "${node_tools[@]}" "${flux_tools[@]}"); print="$cp_bin" ;;
  controlplane) wanted=("${cp_tools[@]}"); print="$cp_bin" ;;
  node) wanted=("${node_tools[@]}"); print="$node_bin" ;;
  flux) wanted=("${flux_tools[@]}"); print="$flux_bin" ;;
  *) echo "usage: build.sh [all|controlplane|node|flux]" >&2; exit 2 ;;
esac

bin_of() {
  case "$1" in
    kubelet | containerd | containerd-shim-runc-v2) echo "$node_bin" ;;
    source-controller | kustomize-controller) echo "$flux_bin" ;;
    *) echo "$cp_bin" ;;
  esac
}

missing=()
for tool in "${wanted[@]}"; do
  [ -x "$(bin_of "$tool")/$tool" ] || missing+=("$tool")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "$print"
  exit 0
fi

command -v "$go_cmd" >/dev/null || { echo "build.sh: Go is required to build the control plane (missing: ${missing[*]})" >&2; exit 1; }
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
    containerd | containerd-shim-runc-v2) pkg=github.com/containerd/containerd/v2/cmd/$tool; dir=containerd ;;
    source-controller | kustomize-controller) pkg=github.com/fluxcd/$tool; dir=flux/$tool ;;
    *) pkg=k8s.io/kubernetes/cmd/$tool; dir=kube ;;
  esac
  flags=$ldflags
  case "$dir" in
    containerd)
      # containerd's own version variables, as its Makefile sets them.
      flags="-s -w -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION"
      ;;
    flux/*)
      # Flux's own Makefile sets no version variables.
      flags="-s -w"
      # The wrapper's go.mod decides what is built, versions.env names the cache directory:
      # the two must agree.
      want="$FLUX_SOURCE_VERSION"; [ "$tool" = kustomize-controller ] && want="$FLUX_KUSTOMIZE_VERSION"
      have="$(cd "$here/$dir" && "$go_cmd" list -m -f '{{.Version}}' "$pkg")"
      if [ "$have" != "$want" ]; then
        echo "build.sh: $dir/go.mod has $pkg $have, versions.env says $want" >&2
        exit 1
      fi
      ;;
  esac
  out="$(bin_of "$tool")"
  mkdir -p "$out"
  echo "build.sh: building $tool ($pkg)" >&2
  tool_start=$(date +%s)
  (cd "$here/$dir" && "$go_cmd" build -trimpath -ldflags "$flags" -o "$out/$tool.tmp" "$pkg")
  # A controller's CRDs come from the same module version as its binary; they are copied
  # before the binary is moved into place, so a cached binary means its CRDs are there too.
  case "$dir" in
    flux/*)
      module_dir="$(cd "$here/$dir" && "$go_cmd" list -m -f '{{.Dir}}' "$pkg")"
      mkdir -p "$flux_dir/crd"
      install -m 0644 "$module_dir"/config/crd/bases/*.yaml "$flux_dir/crd/"
      ;;
  esac
  mv "$out/$tool.tmp" "$out/$tool"
  echo "build.sh: built $tool in $(( $(date +%s) - tool_start ))s" >&2
done
echo "build.sh: built ${missing[*]} in $(( $(date +%s) - start ))s" >&2
echo "$print"
