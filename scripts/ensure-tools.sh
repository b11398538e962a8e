#!/usr/bin/env bash
# Make sure the command-line tools the quality gate needs are installed, with apt and only
# when they are absent. Usage: scripts/ensure-tools.sh [python] [promtool] ...
#   python   - python3 able to create a virtual environment (Debian: python3, python3-venv)
#   promtool - Prometheus' rule checker (Debian package `prometheus`; its server is not started)
set -euo pipefail

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi
updated=""

apt_install() {
  if ! command -v apt-get >/dev/null; then
    echo "ensure-tools: need $* but apt-get is not available; install it by hand" >&2
    exit 1
  fi
  echo "ensure-tools: installing $* with apt"
  if [ -z "$updated" ]; then $SUDO apt-get update -qq; updated=1; fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

for tool in "${@:-promtool}"; do
  case "$tool" in
    python)
      # `python3 -m venv` needs ensurepip, which Debian ships in python3-venv.
      if ! command -v python3 >/dev/null || ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
        apt_install python3 python3-venv
      fi
      ;;
    promtool)
      if ! command -v promtool >/dev/null; then
        apt_install prometheus
        # The gate needs only promtool: keep the packaged server from running on systemd hosts.
        if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
          $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
        fi
        command -v promtool >/dev/null || { echo "ensure-tools: promtool still missing" >&2; exit 1; }
        echo "ensure-tools: $(promtool --version 2>&1 | head -n1)"
      fi
      ;;
    *)
      echo "ensure-tools: unknown tool $tool (known: python, promtool)" >&2
      exit 2
      ;;
  esac
done
