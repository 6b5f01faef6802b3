#!/usr/bin/env bash
# What docqa needs beyond Python: Tesseract's English model, with which it reads scanned PDF pages (tesserocr,
# from pip, brings the engine). With `ocr`, only that (`make run`); without, also what the test suite needs:
# Chromium for the browser tests (Playwright drives it; never `playwright install`, which would download a
# browser), fonts so pages render without the network, and the npm package axe-core, which the browser tests
# inject to check accessibility (kept in .cache/axe, not committed).
set -euo pipefail
AXE_VERSION=4.14.1
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
need=()
dpkg -s tesseract-ocr-eng >/dev/null 2>&1 || need+=(tesseract-ocr-eng)
if [ "${1:-}" != "ocr" ]; then
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  dpkg -s fonts-dejavu-core >/dev/null 2>&1 || need+=(fonts-dejavu-core)
  command -v npm >/dev/null 2>&1 || need+=(npm)
fi
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
[ "${1:-}" = "ocr" ] && exit 0
AXE="$ROOT/.cache/axe/node_modules/axe-core"
if [ ! -f "$AXE/axe.min.js" ] || ! grep -q "\"version\": \"$AXE_VERSION\"" "$AXE/package.json"; then
  npm install --silent --no-audit --no-fund --prefix "$ROOT/.cache/axe" "axe-core@$AXE_VERSION" >/dev/null
fi
