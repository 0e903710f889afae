#!/usr/bin/env bash
# The main job: set up, ingest corpus/ if the store is empty or stale, then start the chat UI.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
status=0
.venv/bin/python -m rag ingest corpus || status=$?
if [ "$status" -ne 0 ] && [ "$status" -ne 3 ]; then exit "$status"; fi
.venv/bin/python -m rag stats
if [ -f ui/app.py ]; then
  exec .venv/bin/python -m streamlit run ui/app.py --server.headless true --server.port "${PORT:-8501}" \
    --browser.gatherUsageStats false
fi
