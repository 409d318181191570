#!/usr/bin/env bash
# The Azure journal backend's contract tests run against Azurite, the Azure Storage emulator from
# npm. It is installed into the repo's node_modules/ (no global install, no Docker); the tests
# start it themselves on a free loopback port.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
AZURITE_VERSION="3.37.0"
if [ -x "$ROOT/node_modules/.bin/azurite-table" ]; then
  exit 0
fi
command -v npm >/dev/null 2>&1 || { echo "npm is missing: install Node.js 18+ (Debian package 'npm')" >&2; exit 1; }
npm install --prefix "$ROOT" --no-save --no-package-lock --no-audit --no-fund --loglevel=error \
  "azurite@$AZURITE_VERSION"
