#!/usr/bin/env bash
# An X server for tests/test_label.py: `start STATE` prints its DISPLAY, `stop STATE`
# ends it. Installs Xvfb and Qt's xcb libraries ($QT_PACKAGES, from
# tumbletrain.label.QT_PACKAGES) when missing, as root (CI runs on a clean
# machine). Test infrastructure, not part of the product.
set -euo pipefail
ACTION=$1
STATE=$2
mkdir -p "$STATE"

if [ "$ACTION" = stop ]; then
  if [ -s "$STATE/xvfb.pid" ]; then kill "$(cat "$STATE/xvfb.pid")" 2>/dev/null || true; fi
  exit 0
fi

missing=()
command -v Xvfb >/dev/null || missing+=(xvfb)
for package in $QT_PACKAGES; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "missing ${missing[*]}: install them (as root: apt-get install ${missing[*]})" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# -displayfd: Xvfb picks a free display and writes its number when it is ready.
exec 3> "$STATE/display"
Xvfb -displayfd 3 -screen 0 1280x1024x24 -nolisten tcp > "$STATE/xvfb.log" 2>&1 &
echo $! > "$STATE/xvfb.pid"
for _ in $(seq 100); do [ -s "$STATE/display" ] && break; sleep 0.1; done
exec 3>&-
[ -s "$STATE/display" ] || { cat "$STATE/xvfb.log" >&2; exit 1; }
echo ":$(head -n1 "$STATE/display")"
