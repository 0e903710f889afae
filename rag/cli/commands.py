"""Query-side commands: ``search``, ``ask``, ``eval``, ``calibrate``, ``feedback``, and the servers for other
tools, ``mcp`` (stdio) and ``serve`` (HTTP API and MCP over HTTP), with ``claude-agent`` (parsers and handlers)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rag.config import Settings

DEFAULT_QUESTIONS = Path("corpus/eval/questions.jsonl")


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (``--k 0`` or ``--k -5`` is a usage error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def add_commands(commands, store_options) -> None:
    search = commands.add_parser("search", help="hybrid search; raw passages with scores")
    search.add_argument("query", nargs="?", help="the search query")
    search.add_argument("--k", type=positive_int, default=10, help="number of passages (default 10)")
    search.add_argument("--doc-type", choices=["reference", "team"])
    search.add_argument("--source", help="only passages of this file (relative or root/relative path)")
    search.add_argument("--mode", choices=["hybrid", "dense", "keyword"], default="hybrid")
    search.add_argument("--batch", type=Path, help='JSONL file of {"id", "question"}; writes JSONL results')
    search.add_argument("--json", action="store_true")
    store_options(search)

    ask = commands.add_parser("ask", help="answer a question with cited sources")
    ask.add_argument("question", nargs="?", help="the question (or --batch FILE)")
    ask.add_argument(
        "--batch", type=Path, help='JSONL file of {"id", "question", "history"?}; writes one JSON answer per line'
    )
    ask.add_argument("--persona", help="persona name or agent file (default backend-architecture-expert)")
    ask.add_argument("--agents-dir", type=Path, help="folder of persona files (default agents/)")
    ask.add_argument(
        "--provider",
        choices=["claude", "openai-compatible", "extractive"],
        help="default: openai-compatible when RAG_LLM_BASE_URL is set, else claude when ANTHROPIC_API_KEY is set "
        "(environment or .env), else extractive",
    )
    ask.add_argument("--anthropic-model", help="Claude model (RAG_ANTHROPIC_MODEL)")
    ask.add_argument("--top-k", type=int, help="passages given to the answerer (RAG_TOP_K)")
    ask.add_argument("--doc-type", choices=["reference", "team"])
    ask.add_argument("--json", action="store_true")
    store_options(ask)

    evaluate = commands.add_parser("eval", help="retrieval quality, abstention and latency on a question file")
    evaluate.add_argument("--questions", type=Path, default=DEFAULT_QUESTIONS)
    evaluate.add_argument(
        "--answers",
        action="store_true",
        help="answer every question and report answer metrics (facts, lead, length, near-miss, refusals)",
    )
    evaluate.add_argument("--provider", choices=["claude", "extractive"], help="answerer for --answers")
    evaluate.add_argument("--details", type=Path, help="with --answers: write every scored answer as JSONL here")
    evaluate.add_argument("--json", action="store_true")
    store_options(evaluate)

    calibrate = commands.add_parser("calibrate", help="derive the abstention and support thresholds")
    calibrate.add_argument("--questions", type=Path, default=DEFAULT_QUESTIONS)
    store_options(calibrate)

    mcp = commands.add_parser("mcp", help="MCP server over stdio for Claude Code and other agents (read-only tools)")
    _answerer_options(mcp)
    store_options(mcp)

    serve = commands.add_parser(
        "serve", help="HTTP API (/v1/..., OpenAPI at /docs) and the MCP tools at /mcp, behind bearer tokens"
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=positive_int, default=8080, help="port (default 8080)")
    serve.add_argument(
        "--tokens-file", dest="api_tokens_file", type=Path, metavar="FILE",
        help='JSON of token -> {"user", "role", "groups"} (RAG_API_TOKENS_FILE); required',
    )
    _answerer_options(serve)
    store_options(serve)

    agent = commands.add_parser(
        "claude-agent", help="print a persona as a Claude Code agent file (.claude/agents/) that uses the MCP tools"
    )
    agent.add_argument("--persona", help="persona name or agent file (default backend-architecture-expert)")
    agent.add_argument("--agents-dir", type=Path, help="folder of persona files (default agents/)")
    agent.add_argument(
        "--server", default="knowledge", help="the MCP server's name in Claude Code (`claude mcp add NAME`; knowledge)"
    )

    feedback = commands.add_parser("feedback", help="answers rated in the chat UI (thumbs up/down, comments)")
    feedback_actions = feedback.add_subparsers(dest="feedback_action", required=True)
    export = feedback_actions.add_parser("export", help="all feedback as JSONL, or the thumbs-down as eval questions")
    export.add_argument("--out", type=Path, help="file to write (default: standard output)")
    export.add_argument(
        "--as-questions",
        action="store_true",
        help="only thumbs-down answers, as question-file lines for `eval --questions` (review their sources)",
    )
    store_options(export)


def _answerer_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--persona", help="persona of the ask tool (default backend-architecture-expert)")
    parser.add_argument("--agents-dir", type=Path, help="folder of persona files (default agents/)")
    parser.add_argument(
        "--provider", choices=["claude", "openai-compatible", "extractive"], help="answerer of the ask tool (as `ask`)"
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    handler = {
        "search": cmd_search,
        "ask": cmd_ask,
        "eval": cmd_eval,
        "calibrate": cmd_calibrate,
        "feedback": cmd_feedback,
        "mcp": cmd_mcp,
        "serve": cmd_serve,
        "claude-agent": cmd_claude_agent,
    }[args.command]
    return handler(args, settings)


def _passage_row(passage) -> dict:
    return {
        "source": passage.path or passage.source,
        "title": passage.title,
        "section": passage.section,
        "doc_type": passage.doc_type,
        "text": passage.text,
        "score": round(passage.score, 6),
    }


def cmd_search(args: argparse.Namespace, settings: Settings) -> int:
    from rag.search.retrieval import Retriever

    if bool(args.query) == bool(args.batch):
        print("error: give a query or --batch FILE (not both)", file=sys.stderr)
        return 2
    if args.batch:
        try:
            rows = batch_rows(args.batch)
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    retriever = Retriever(settings)
    if args.batch:
        for row in rows:
            result = retriever.search(
                row["question"], k=args.k, doc_type=args.doc_type, source=args.source, mode=args.mode
            )
            print(json.dumps({"id": row["id"], "retrieved": [_passage_row(p) for p in result.passages]}))
        return 0
    result = retriever.search(args.query, k=args.k, doc_type=args.doc_type, source=args.source, mode=args.mode)
    if args.json:
        print(
            json.dumps(
                {
                    "query": args.query,
                    "confidence": round(result.confidence, 4),
                    "retrieved": [_passage_row(p) for p in result.passages],
                }
            )
        )
        return 0
    print(f"{len(result.passages)} passages in {1000 * result.seconds:.0f} ms (confidence {result.confidence:.2f})")
    for rank, passage in enumerate(result.passages, start=1):
        snippet = " ".join(passage.text.split())[:160]
        print(f"{rank:2}. {passage.score:.4f}  {passage.path}  [{passage.heading}]\n    {snippet}")
    return 0


def cmd_ask(args: argparse.Namespace, settings: Settings) -> int:
    from rag.answer.answering import Answerer, choose_provider
    from rag.answer.personas import PersonaError, load_persona
    from rag.search.retrieval import Retriever

    if bool(args.question and args.question.strip()) == bool(args.batch):
        print("error: give a question or --batch FILE (not both, and not an empty question)", file=sys.stderr)
        return 2
    try:
        persona = load_persona(args.persona or settings.persona, settings.agents_dir)
    except PersonaError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.batch:
        try:
            lines = batch_rows(args.batch, with_history=True)
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    retriever = Retriever(settings)
    answerer = Answerer(settings, retriever, choose_provider(settings, retriever, args.provider))
    if args.batch:
        return _ask_batch(answerer, persona, lines, args.doc_type)
    return _ask_one(answerer, persona, args)


def batch_rows(path: Path, with_history: bool = False) -> list[dict]:
    """The lines of a ``--batch`` file as ``{"id", "question"}`` (and ``"history"``), every line checked before
    any model is loaded or any line answered. Raises ``ValueError`` naming the file, the line and the reason."""
    from rag.app.evaluation import as_turns
    from rag.documents.front_matter import clip

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read --batch {path}: {getattr(error, 'strerror', None) or error}") from None
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except ValueError:
            raise ValueError(f"{where}: not valid JSON") from None
        if not isinstance(row, dict):
            raise ValueError(f'{where}: not a JSON object {{"id", "question"}}')
        if "id" not in row:
            raise ValueError(f"{where}: missing 'id'")
        question = row.get("question")
        if not isinstance(question, str) or not question.strip():
            raise ValueError(f"{where}: 'question' must be a non-empty text, not {clip(repr(question), 40)}")
        checked = {"id": row["id"], "question": question}
        if with_history:
            try:
                checked["history"] = as_turns(row.get("history") or [])
            except (ValueError, KeyError, TypeError) as error:
                raise ValueError(f"{where}: 'history' must be a list of turns ({clip(str(error), 80)})") from None
        rows.append(checked)
    return rows


def _ask_batch(answerer, persona, rows: list[dict], doc_type: str | None) -> int:
    from rag.answer.events import Final

    failed = 0
    for row in rows:
        final = next(e for e in answerer.answer(row["question"], persona, row["history"], doc_type=doc_type)
                     if isinstance(e, Final))
        failed += bool(final.error or final.incomplete)
        print(json.dumps({"id": row["id"], **final.to_dict()}), flush=True)
    return 1 if failed else 0


def _ask_one(answerer, persona, args: argparse.Namespace) -> int:
    from rag.answer.events import ErrorEvent, Final, StatusEvent, TextDelta

    final = None
    for event in answerer.answer(args.question, persona, doc_type=args.doc_type):
        if isinstance(event, TextDelta) and not args.json:
            print(event.text, end="", flush=True)
        elif isinstance(event, StatusEvent):  # a sign of life while the answerer waits (a retry countdown)
            print(event.message, file=sys.stderr, flush=True)
        elif isinstance(event, ErrorEvent) and not args.json:
            print(f"\nerror: {event.message}", file=sys.stderr)
        elif isinstance(event, Final):
            final = event
    if final is None:
        return 1
    failed = bool(final.error or final.incomplete)
    if args.json:
        print(json.dumps(final.to_dict()))
        return 1 if failed else 0
    print("\n")
    for note in ([final.provider_note] if final.provider_note else []) + final.notes:
        print(f"note: {note}")
    for citation in final.citations:
        print(f"[{citation.n}] {citation.passage.heading} ({citation.passage.path})")
    for check in final.unsupported:
        print(f"unsupported: {check.sentence[:100]}", file=sys.stderr)
    if final.incomplete and not final.error:
        print("error: the answer is incomplete" + (f" ({final.stop_reason})" if final.stop_reason else ""),
              file=sys.stderr)
    return 1 if failed else 0


def cmd_eval(args: argparse.Namespace, settings: Settings) -> int:
    from rag.app.evaluation import format_report, run_eval

    if args.answers:
        return _eval_answers(args, settings)
    report = run_eval(settings, args.questions)
    if args.json:
        print(json.dumps(report))
        return 0
    print(format_report(report))
    print(f"({report['seconds']} s)")
    return 0


def _eval_answers(args: argparse.Namespace, settings: Settings) -> int:
    from rag.answer.answering import Answerer, choose_provider
    from rag.answer.personas import load_persona
    from rag.app.answer_eval import answer_all, format_summary, summarise
    from rag.app.evaluation import load_questions
    from rag.search.retrieval import Retriever

    questions = load_questions(args.questions)
    retriever = Retriever(settings)
    answerer = Answerer(settings, retriever, choose_provider(settings, retriever, args.provider))
    scored = answer_all(answerer, load_persona(settings.persona, settings.agents_dir), questions)
    summary = summarise(scored)
    if args.details:
        args.details.write_text("".join(json.dumps(s.to_dict()) + "\n" for s in scored), encoding="utf-8")
    if args.json:
        print(json.dumps(summary))
    else:
        print(format_summary({answerer.provider.name: summary}))
    return 0


def cmd_calibrate(args: argparse.Namespace, settings: Settings) -> int:
    from rag.app.evaluation import calibrate, load_questions
    from rag.search.retrieval import Retriever

    print(json.dumps(calibrate(load_questions(args.questions), Retriever(settings)), indent=2))
    return 0


def cmd_feedback(args: argparse.Namespace, settings: Settings) -> int:
    """``feedback export``: every rating as JSONL, or (``--as-questions``) the thumbs-down as eval questions.
    Everything is read before the output is opened, and the output may not be the feedback file itself."""
    from rag.app.feedback import FeedbackError, FeedbackStore

    store = FeedbackStore.for_settings(settings)
    if args.out and (refusal := store.refuses_as_output(args.out)):
        print(f"error: {refusal}", file=sys.stderr)
        return 2
    try:
        lines = store.question_lines() if args.as_questions else store.jsonl_lines()
    except FeedbackError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.out:
        try:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            with args.out.open("w", encoding="utf-8") as out:
                out.writelines(lines)
        except OSError as error:
            print(f"error: cannot write --out {args.out}: {error.strerror or error}", file=sys.stderr)
            return 1
    else:
        sys.stdout.writelines(lines)
    for problem in store.skipped:
        print(f"skipped {problem}", file=sys.stderr)
    what = "thumbs-down answers as questions" if args.as_questions else "feedback entries"
    print(f"{len(lines)} {what} from {store.path}" + (f" written to {args.out}" if args.out else ""), file=sys.stderr)
    return 0


def _knowledge_service(args: argparse.Namespace, settings: Settings):
    """The service both servers offer, loaded before the first request; a persona that cannot be read only
    disables the ask tool (said once here), the other tools work."""
    from rag.answer.personas import PersonaError
    from rag.app.knowledge import KnowledgeService

    service = KnowledgeService(settings, provider=args.provider)
    service.warm_up()
    try:
        service.persona()
    except PersonaError as error:
        print(f"warning: ask will fail until this is fixed: {error}", file=sys.stderr)
    return service


def cmd_mcp(args: argparse.Namespace, settings: Settings) -> int:
    from rag.server.mcp import serve_stdio

    service = _knowledge_service(args, settings)
    print(f"MCP server on stdio over {service.retriever.store.location} (read-only)", file=sys.stderr, flush=True)
    serve_stdio(service)
    return 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from rag.search.access import TokenFileError, TokenTable
    from rag.server.http import run_server

    if settings.api_tokens_file is None:
        print("error: give --tokens-file or set RAG_API_TOKENS_FILE: every request needs a bearer token from it",
              file=sys.stderr)
        return 2
    try:
        tokens = TokenTable(settings.api_tokens_file)
    except TokenFileError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    service = _knowledge_service(args, settings)
    print(f"serving {service.retriever.store.location} on http://{args.host}:{args.port} (API docs at /docs, MCP "
          f"at /mcp; {len(tokens)} tokens from {settings.api_tokens_file})", file=sys.stderr, flush=True)
    run_server(service, tokens, args.host, args.port)
    return 0


def cmd_claude_agent(args: argparse.Namespace, settings: Settings) -> int:
    from rag.answer.personas import PersonaError, claude_code_agent, load_persona

    try:
        persona = load_persona(args.persona or settings.persona, settings.agents_dir)
    except PersonaError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(claude_code_agent(persona, args.server), end="")
    return 0
