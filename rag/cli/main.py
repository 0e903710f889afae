"""Command line: ``python -m rag ingest|stats|search|ask|eval|mcp|serve ...``, a thin layer over the library.

Exit codes: 0 success, 1 a runtime error (store unreachable, model mismatch, busy store),
2 usage errors (argparse), 3 an ingest where some files failed but the rest went in.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from rag.config import Settings, load_settings

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3


def _store_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("store")
    group.add_argument("--data-dir", type=Path, help="data directory (RAG_DATA_DIR, default .rag-data)")
    group.add_argument("--collection", help="collection name (RAG_COLLECTION)")
    group.add_argument("--embedding-model", help="sentence-transformers model name or path (RAG_EMBEDDING_MODEL)")
    group.add_argument("--chroma-host", help="Chroma server host; unset = embedded store (RAG_CHROMA_HOST)")
    group.add_argument("--chroma-port", type=int, help="Chroma server port (RAG_CHROMA_PORT)")


def _settings(args: argparse.Namespace) -> Settings:
    names = (
        "data_dir collection embedding_model chroma_host chroma_port chunk_tokens chunk_overlap max_file_mb "
        "persona agents_dir anthropic_model top_k api_tokens_file"
    ).split()
    return load_settings(**{name: getattr(args, name, None) for name in names})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rag", description="Architecture knowledge assistant")
    commands = parser.add_subparsers(dest="command", required=True)

    ingest = commands.add_parser("ingest", help="load, chunk, embed and sync documents into the store")
    ingest.add_argument("paths", nargs="*", help="files or folders (default: corpus/)")
    ingest.add_argument("--doc-type", choices=["reference", "team"], help="force the doc type of these files")
    ingest.add_argument(
        "--access",
        action="append",
        metavar="GROUP",
        help="only members of GROUP may read these files (repeat for more groups; a file's own front matter "
        "'access' wins); kept for later runs",
    )
    ingest.add_argument(
        "--public",
        action="store_true",
        help="drop the groups an earlier --access gave these files: everyone reads them",
    )
    ingest.add_argument("--no-prune", action="store_true", help="keep chunks of files deleted under these roots")
    ingest.add_argument(
        "--reindex", action="store_true", help="rebuild the collection from scratch (built aside, then swapped in)"
    )
    ingest.add_argument(
        "--force-prune",
        action="store_true",
        help="remove the documents of a root even when more than half of them are gone at once",
    )
    ingest.add_argument(
        "--follow-symlinks", action="store_true", help="also ingest links that lead outside the named folders"
    )
    ingest.add_argument(
        "--watch",
        action="store_true",
        help="keep running: ingest again after each batch of file changes (Ctrl-C to stop)",
    )
    ingest.add_argument(
        "--poll",
        action="store_true",
        help="with --watch: scan for changes every second (network shares, where change notifications never arrive)",
    )
    ingest.add_argument(
        "--debounce", type=float, default=1.0, help="with --watch: seconds without changes before a batch (1)"
    )
    ingest.add_argument("--chunk-tokens", type=int, help="chunk size in model tokens (RAG_CHUNK_TOKENS)")
    ingest.add_argument("--chunk-overlap", type=int, help="overlap in tokens when a block is cut (RAG_CHUNK_OVERLAP)")
    ingest.add_argument("--max-file-mb", type=float, help="refuse larger files (RAG_MAX_FILE_MB)")
    ingest.add_argument("--json", action="store_true", help="print one JSON summary")
    _store_options(ingest)

    stats = commands.add_parser("stats", help="documents and chunks per doc type")
    stats.add_argument("--json", action="store_true")
    _store_options(stats)

    from rag.cli import commands as extra

    extra.add_commands(commands, _store_options)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from rag.index.store import StoreError

    try:
        settings = _settings(args)
    except ValueError as error:
        print(f"error: invalid setting: {error}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "ask" and args.question is not None and not args.question.strip():
        print("error: the question is empty", file=sys.stderr)
        return EXIT_USAGE
    handlers = {"ingest": cmd_ingest, "stats": cmd_stats}
    try:
        if args.command in READ_COMMANDS:
            _require_store(settings)
        if args.command in handlers:
            return handlers[args.command](args, settings)
        from rag.cli import commands as extra

        return extra.run(args, settings)
    except (StoreError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:  # output piped into `head`: the reader has all it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush does not fail again
        return EXIT_OK
    except KeyboardInterrupt:
        print("interrupted; run the same command again to finish (nothing is left half-done)", file=sys.stderr)
        return 130


READ_COMMANDS = ("stats", "search", "ask", "eval", "calibrate", "mcp", "serve")


def _require_store(settings: Settings) -> None:
    """A read command over a data directory with no store (a mistyped --data-dir) says so instead of
    answering from nothing; and it creates nothing there."""
    from rag.index.store import Store, StoreError

    if not Store(settings).present():
        raise StoreError(
            f"no store at {Path(settings.data_dir).resolve()}: run `python -m rag ingest` first, or check "
            "--data-dir / RAG_DATA_DIR"
        )


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    from rag.documents.discovery import UnsafePathError, printable, refuse_unsafe_paths
    from rag.ingest.pipeline import ingest

    paths = [Path(p) for p in args.paths] if args.paths else [Path("corpus")]
    try:
        refuse_unsafe_paths(args.paths)
    except UnsafePathError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    missing = [printable(str(p)) for p in paths if not p.exists() and not p.is_symlink()]
    if missing:
        print(f"error: no such file or folder: {', '.join(missing)}", file=sys.stderr)
        return EXIT_USAGE
    try:
        access = _access_option(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    options = {
        "doc_type": args.doc_type,
        "access": access,
        "prune": not args.no_prune,
        "force_prune": args.force_prune,
        "follow_symlinks": args.follow_symlinks,
    }
    if args.watch:
        return _watch(paths, settings, args, options)
    report = ingest(paths, settings, reindex=args.reindex, progress=None if args.json else _progress_bar(), **options)
    _print_report(report, args.json)
    return EXIT_PARTIAL if report.files_failed else EXIT_OK


def _access_option(args: argparse.Namespace) -> tuple[str, ...] | None:
    """The groups of ``--access`` (also comma-separated), () for ``--public``, None when neither was given."""
    from rag.documents.access import AccessError, normalize_groups

    if args.public and args.access:
        raise ValueError("--public and --access contradict each other: give one")
    if args.public:
        return ()
    if not args.access:
        return None
    try:
        groups = normalize_groups(part for value in args.access for part in value.split(",") if part.strip())
    except AccessError as error:
        raise ValueError(f"--access: {error}") from None
    if not groups:
        raise ValueError("--access needs a group name (use --public to let everyone read the files)")
    return groups


def _watch(paths: list[Path], settings: Settings, args: argparse.Namespace, options: dict) -> int:
    from rag.ingest.watch import watch

    if args.reindex:
        print("error: --reindex rebuilds everything once; run it before --watch, not with it", file=sys.stderr)
        return EXIT_USAGE
    if args.debounce < 0:
        print("error: --debounce must be zero or more seconds", file=sys.stderr)
        return EXIT_USAGE
    if not args.json:
        print(f"watching {', '.join(str(p) for p in paths)} (Ctrl-C to stop)", file=sys.stderr)
    watch(
        paths,
        settings,
        debounce=args.debounce,
        poll=args.poll,
        on_report=lambda report: _print_report(report, args.json),
        on_warning=lambda message: print(f"warning: {message}", file=sys.stderr),
        **options,
    )
    return EXIT_OK


def _print_report(report, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report.to_dict()), flush=True)
        return
    print(
        f"{report.files_seen} files: {report.files_added} added, {report.files_updated} updated, "
        f"{report.files_unchanged} unchanged, {report.files_removed} removed, {len(report.files_failed)} failed, "
        f"{len(report.files_skipped)} skipped (nothing to index); "
        f"{report.chunks_embedded} chunks embedded, {report.chunks_total} in the store ({report.seconds:.1f} s)",
        flush=True,
    )
    for failure in report.files_failed:
        print(f"  failed: {failure.path}: {failure.error}", file=sys.stderr)


def _progress_bar():
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    bar: dict[str, tqdm] = {}

    def update(event) -> None:
        if "bar" not in bar:
            bar["bar"] = tqdm(total=event.total, unit="file", desc="ingest", file=sys.stderr)
        bar["bar"].set_postfix_str(event.path[-40:], refresh=False)
        bar["bar"].update(1)
        if event.done >= event.total:
            bar["bar"].close()

    return update


def cmd_stats(args: argparse.Namespace, settings: Settings) -> int:
    from rag.app.stats import collect_stats

    stats = collect_stats(settings)
    if args.json:
        print(json.dumps(stats))
        return EXIT_OK
    print(f"store: {stats['store']}  collection: {stats['collection']}  model: {stats['embedding_model']}")
    for doc_type, row in sorted(stats["by_doc_type"].items()):
        print(f"  {doc_type:10} {row['documents']:6} documents {row['chunks']:8} chunks")
    print(f"  {'total':10} {stats['documents']:6} documents {stats['chunks']:8} chunks")
    return EXIT_OK


def ingest_team_docs(argv: list[str] | None = None) -> int:
    """``rag-ingest-docs PATH ...``: a team member adds design docs; doc type ``team`` unless told otherwise."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not any(arg == "--doc-type" or arg.startswith("--doc-type=") for arg in argv):
        argv += ["--doc-type", "team"]
    # parsed, not guessed: the value of an option (``--data-dir X``) is not a path to ingest
    if not build_parser().parse_args(["ingest", *argv]).paths:
        print("usage: ingest_docs.py PATH [PATH ...] [ingest options]", file=sys.stderr)
        return EXIT_USAGE
    return main(["ingest", *argv])
