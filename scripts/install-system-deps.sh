#!/usr/bin/env bash
# System packages the test suite needs, from Debian's repositories, installed only when
# missing: Chromium (browser tests, driven by Playwright with executable_path
# /usr/bin/chromium) and PostgreSQL (the tracking-server and shared-study tests).
# Needs root (CI runs as root); elsewhere it says what to install and exits non-zero.
set -euo pipefail

need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
if ! command -v pg_ctl >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
  need+=(postgresql)
fi
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "error: the tests need the Debian packages: ${need[*]} (run: sudo apt-get install -y ${need[*]})" >&2
  exit 1
fi
echo "installing Debian packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
