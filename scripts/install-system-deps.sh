#!/usr/bin/env bash
# Installs the Debian packages the tests and the demo run for real: the CNCF distribution
# registry (`docker-registry`). Idempotent: does nothing when it is already there.
set -euo pipefail
need=()
[ -x /usr/bin/docker-registry ] || need+=(docker-registry)
[ ${#need[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "install-system-deps: installing ${need[*]}" >&2
$sudo apt-get update -qq
# The package's service is not wanted: the harness starts its own registry per session.
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
