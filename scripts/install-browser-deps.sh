#!/usr/bin/env bash
# What the portal's browser tests need (tests/browser, run by tests/e2e/portal.rs):
# Debian's Chromium, and Playwright (playwright-core, which drives an installed browser)
# plus axe-core from npm, pinned in tests/browser/package-lock.json.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing chromium (Debian) for the portal's browser tests"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }
  else
    echo "note: /usr/bin/chromium is missing and this is not root on Debian: the browser test will say it cannot run"
  fi
fi

if ! command -v npm >/dev/null; then
  echo "note: npm is missing: the browser test will say it cannot run (install Node.js 18+ and npm)"
  exit 0
fi
if [ ! -d tests/browser/node_modules/playwright-core ] || [ tests/browser/package-lock.json -nt tests/browser/node_modules ]; then
  echo "installing the browser test's npm packages (tests/browser)"
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
fi
