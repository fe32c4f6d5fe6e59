#!/usr/bin/env bash
# Installs the Debian packages the tests and the demo run for real: the CNCF distribution
# registry (`docker-registry`) and, for the tests' real node (tests/harness/node.py), the
# OCI runtime `runc`, the CNI plugins (bridge, host-local, loopback) and a static busybox
# (the base layer of the images that node runs), and for the operator's own image
# (tests/harness/operator_image.py) the daemonless builder `buildah` and `debootstrap`, which
# makes the Python base image from Debian packages, and for GitOps write-back's tests git,
# `openssh-server` (the harness starts its own sshd on 127.0.0.1; never the system
# service) and `openssh-client`. Idempotent: does nothing when all of it
# is already there.
set -euo pipefail
need=()
[ -x /usr/bin/docker-registry ] || need+=(docker-registry)
[ -x /usr/sbin/runc ] || need+=(runc)
for plugin in bridge host-local loopback; do
  if [ ! -x "/usr/lib/cni/$plugin" ]; then
    need+=(containernetworking-plugins)
    break
  fi
done
[ -x /bin/busybox ] && [ "$(dpkg-query -W -f '${Status}' busybox-static 2>/dev/null)" = "install ok installed" ] \
  || need+=(busybox-static)
[ -x /usr/bin/buildah ] || need+=(buildah)
[ -x /usr/sbin/debootstrap ] || need+=(debootstrap)
[ -x /usr/bin/git ] && [ -x /usr/bin/git-shell ] || need+=(git)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
[ -x /usr/bin/ssh ] && [ -x /usr/bin/ssh-keygen ] || need+=(openssh-client)
[ ${#need[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "install-system-deps: installing ${need[*]}" >&2
$sudo apt-get update -qq
# The registry's service is not wanted: the harness starts its own registry per session.
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
