#!/usr/bin/env bash
# Creates .venv and installs the project (with test extras when asked); a no-op when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python_bin="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python_bin" -m venv .venv
fi
stamp=".venv/.installed${extras:+-$extras}"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "Installing into .venv (the first time takes a few minutes; log: .venv/install.log)..."
  log=.venv/install.log
  if ! {
    .venv/bin/python -m pip install --upgrade pip &&
      # torch first and pinned: the CPU build; an unpinned resolve would pull a multi-GB CUDA build
      .venv/bin/python -m pip install "torch==2.13.0" &&
      .venv/bin/python -m pip install -e ".${extras:+[$extras]}"
  } >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "error: installing the project failed; the full log is in $log" >&2
    exit 1
  fi
  echo "$want" > "$stamp"
fi
