#!/usr/bin/env bash
# Make sure the browser the browser tests drive is installed: Debian's `chromium` at
# /usr/bin/chromium (Playwright for Python drives it with executable_path; it never downloads
# a browser). apt-get runs only when the binary is missing.
set -euo pipefail

BROWSER=/usr/bin/chromium
SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi

if [ -x "$BROWSER" ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "ensure-browser: $BROWSER is missing and apt-get is not available; install Chromium" >&2
  exit 1
fi
echo "ensure-browser: installing chromium (Debian package) with apt"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
  chromium fonts-dejavu-core >/dev/null
[ -x "$BROWSER" ] || { echo "ensure-browser: $BROWSER still missing" >&2; exit 1; }
echo "ensure-browser: $("$BROWSER" --version 2>/dev/null | head -n1)"
