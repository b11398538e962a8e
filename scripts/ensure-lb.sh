#!/usr/bin/env bash
# Make sure HAProxy (the load balancer of deploy/lb/haproxy.cfg and the multi-instance test)
# is installed: with apt, and only when it is absent. Prints the haproxy path.
set -euo pipefail

if command -v haproxy >/dev/null; then
  command -v haproxy
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi
if ! command -v apt-get >/dev/null; then
  echo "ensure-lb: haproxy is missing and apt-get is not available; install haproxy by hand" >&2
  exit 1
fi
echo "ensure-lb: installing haproxy with apt" >&2
$SUDO apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends haproxy >&2
# Only the binary is needed: keep the packaged service from running on systemd hosts.
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  $SUDO systemctl disable --now haproxy >/dev/null 2>&1 || true
fi
command -v haproxy || { echo "ensure-lb: haproxy still missing" >&2; exit 1; }
