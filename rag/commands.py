"""Commands of the query side (search, ask, eval); filled in with retrieval and answering."""

from __future__ import annotations


def add_commands(commands, store_options) -> None:
    return None


def run(args, settings) -> int:
    raise RuntimeError(f"unknown command {args.command}")
