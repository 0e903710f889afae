#!/usr/bin/env python3
"""Add a team's design docs to the knowledge base: ``python scripts/ingest_docs.py PATH ...``.

Same options as ``python -m rag ingest``; the doc type is ``team`` unless ``--doc-type`` says otherwise.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rag.cli.main import ingest_team_docs  # noqa: E402

if __name__ == "__main__":
    sys.exit(ingest_team_docs())
