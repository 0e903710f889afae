#!/usr/bin/env python3
"""What a Claude answer costs on your own knowledge base, before any call is made.

    python scripts/claude_cost.py [--data-dir DIR] [--questions corpus/eval/questions.jsonl] [--n 20]
                                  [--output-tokens 400] [--models claude-sonnet-5-5,claude-haiku-5-5]

Builds the real answer request (persona, passages, question) for the first ``--n`` questions of the file
against an ingested store, measures its size (3.5 characters a token: an estimate, the API's own count
is in each answer's ``usage``), and prices a first answer (the persona prompt written to the cache) and a
later one (read from it) with the table in ``rag/answer/providers/claude/models.py``. Models that always think
are charged ``--thinking-tokens`` more output.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rag.answer.personas import load_persona  # noqa: E402
from rag.answer.providers.claude.client import ClaudeProvider  # noqa: E402
from rag.answer.providers.claude.models import estimate_cost, request_settings  # noqa: E402
from rag.config import load_settings  # noqa: E402
from rag.search.retrieval import Retriever  # noqa: E402

CHARS_PER_TOKEN = 3.5


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--questions", type=Path, default=Path("corpus/eval/questions.jsonl"))
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--output-tokens", type=int, default=400)
    parser.add_argument("--thinking-tokens", type=int, default=1500)
    parser.add_argument("--models", default="claude-sonnet-5-5,claude-haiku-5-5,claude-opus-5-5")
    args = parser.parse_args()
    settings = load_settings(data_dir=args.data_dir)
    retriever = Retriever(settings)
    persona = load_persona(settings.persona, settings.agents_dir)
    provider = ClaudeProvider(settings, api_key="not-used")  # builds requests only; nothing is sent
    lines = args.questions.read_text(encoding="utf-8").splitlines()
    questions = [json.loads(line)["question"] for line in lines if line.strip()][: args.n]
    system = messages = 0.0
    for question in questions:
        passages = retriever.search(question, k=settings.top_k, widen=True).passages
        request = provider.request(question, [], persona, passages)
        system += len(json.dumps(request["system"])) / CHARS_PER_TOKEN / len(questions)
        messages += len(json.dumps(request["messages"])) / CHARS_PER_TOKEN / len(questions)
    print(f"{len(questions)} questions: persona {system:.0f} tokens (cached), passages and question {messages:.0f}")
    for model in args.models.split(","):
        thinks = request_settings(model).thinking == {"type": "adaptive"}
        output = args.output_tokens + (args.thinking_tokens if thinks else 0)
        first = estimate_cost(model, {"input_tokens": messages, "cache_creation_input_tokens": system,
                                      "output_tokens": output})
        later = estimate_cost(model, {"input_tokens": messages, "cache_read_input_tokens": system,
                                      "output_tokens": output})
        print(f"{model}: first answer ${first:.4f}, later answers ${later:.4f} ({output} output tokens)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
