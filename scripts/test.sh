#!/usr/bin/env bash
# Sets up everything the tests need and runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "warning: could not install chromium"
  elif command -v sudo >/dev/null; then
    (sudo apt-get update -qq && sudo apt-get install -y -qq chromium >/dev/null) || echo "warning: could not install chromium"
  fi
fi
export HF_HUB_OFFLINE=1
.venv/bin/ruff check rag ui scripts tests
.venv/bin/lint-imports
exec .venv/bin/python -m pytest "$@"
