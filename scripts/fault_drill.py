"""Fault drill: kills ingests (plain and --reindex) at random points, edits the corpus between kills,
then lets one ingest finish and compares the store with a clean ingest of the same files: chunks,
manifest, keyword (BM25) and dense search results must all be the same.

    .venv/bin/python scripts/fault_drill.py [--runs 10] [--seed 7] [--files 12] [--hostile] [--swap-kills]
        [--keep DIR]

``--hostile`` adds the hostile files of issue 24 to the corpus (a YAML alias bomb, shortcode runs, an include
fan-out, nested HTML, an rST substitution bomb, a merged DOCX cell): every run must refuse or read them in
bounded time and memory. ``--swap-kills`` then SIGKILLs one reindex at each step of its swap in turn (each
kill's leftovers are what the next run starts from).

Exit code 0 when every comparison matched, 1 otherwise (the differences are printed). CI runs it with
a small ``--runs`` through tests/ingest/test_ingest_kill.py.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

CHUNK_TOKENS = 48
WORDS = (
    "cache shard replica leader follower quorum partition offset consumer producer broker queue latency "
    "throughput backpressure idempotency retry timeout circuit breaker bulkhead outbox saga snapshot "
    "compaction index tenant region failover lease heartbeat gossip checkpoint"
).split()
QUERIES = ("replica failover lease", "outbox saga compaction", "retry timeout circuit breaker", "tenant region shard")

CHILD = """
import os, signal, sys
from pathlib import Path
from rag.config import Settings
from rag.ingest.pipeline import ingest

def progress(event):
    print(f"{event.done}/{event.total} {event.status}", flush=True)

def sigkill_during_the_swap(after):
    from chromadb.api.client import Client
    from chromadb.api.models.Collection import Collection
    from rag.ingest import reindex

    done, swapping = [0], [False]
    rename, drop, swap_in = Collection.modify, Client.delete_collection, reindex.swap_in

    def step():
        if done[0] == after:
            print("killed in the swap", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        done[0] += 1

    def counted_rename(self, name=None, metadata=None, configuration=None):
        if name is not None and swapping[0]:
            step()
        return rename(self, name=name, metadata=metadata, configuration=configuration)

    def counted_drop(self, name, *args, **kwargs):
        if swapping[0]:
            step()
        return drop(self, name, *args, **kwargs)

    def counted_swap(*args, **kwargs):
        swapping[0] = True
        swap_in(*args, **kwargs)
        swapping[0] = False
        step()

    Collection.modify, Client.delete_collection, reindex.swap_in = counted_rename, counted_drop, counted_swap

mode = sys.argv[4]
if mode.startswith("swapkill:"):
    sigkill_during_the_swap(int(mode.split(":")[1]))
settings = Settings(_env_file=None, data_dir=Path(sys.argv[1]), chunk_tokens=int(sys.argv[3]))
ingest([Path(sys.argv[2])], settings, reindex=mode != "-", progress=progress)
print("finished", flush=True)
"""
SWAP_OPERATIONS = 6  # renames of the old pair away and of the built pair in, drops of the old pair


@dataclass
class Kill:
    run: int
    reindex: bool
    after_events: int
    delay: float
    killed: bool


def write_doc(path: Path, rng: random.Random, sections: int) -> None:
    parts = [
        f"## Part {n} {rng.choice(WORDS)}\n\n" + " ".join(rng.choice(WORDS) for _ in range(30)) + "."
        for n in range(sections)
    ]
    path.write_text(f"# Note {path.stem}\n\n" + "\n\n".join(parts) + "\n")


def edit_corpus(corpus: Path, rng: random.Random) -> None:
    """Between two kills the world moves on: a file changes, one may go, one may come."""
    files = sorted(corpus.glob("*.md"))
    write_doc(rng.choice(files), rng, rng.randint(2, 8))
    if len(files) > 4 and rng.random() < 0.5:
        rng.choice(files).unlink()
    if rng.random() < 0.5:
        write_doc(corpus / f"new-{rng.randrange(10**6)}.md", rng, rng.randint(2, 8))


def child_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAG_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["HF_HUB_OFFLINE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def kill_an_ingest(work: Path, data: Path, rng: random.Random, run: int) -> Kill:
    """Starts an ingest in a child process and SIGKILLs it after a random number of progress events
    plus a random delay (so kills land between writes as well as on them)."""
    reindex = rng.random() < 0.3
    after, delay = rng.randint(0, 6), rng.uniform(0.0, 0.4)
    command = [sys.executable, "-c", CHILD, str(data), "corpus", str(CHUNK_TOKENS), "reindex" if reindex else "-"]
    child = subprocess.Popen(
        command, cwd=work, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        seen = 0
        while seen < after:
            line = child.stdout.readline()
            if not line or line.startswith("finished"):
                break
            seen += 1
        time.sleep(delay)
        killed = child.poll() is None
        if killed:
            os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return Kill(run, reindex, after, round(delay, 3), killed)


def swap_kill(work: Path, data: Path, after: int) -> bool:
    """A reindex in a child that SIGKILLs itself after ``after`` renames or drops of its swap (after all of
    them when ``after`` is SWAP_OPERATIONS); True when it was killed where asked."""
    command = [sys.executable, "-c", CHILD, str(data), "corpus", str(CHUNK_TOKENS), f"swapkill:{after}"]
    child = subprocess.run(command, cwd=work, env=child_env(), capture_output=True, text=True, timeout=600)
    return child.returncode == -signal.SIGKILL and "killed in the swap" in child.stdout


def write_hostile_files(folder: Path) -> None:
    """The small files of issue 24 that once cost minutes or gigabytes, and a merged DOCX cell."""
    import io

    folder.mkdir(parents=True, exist_ok=True)
    bomb = "a: &a [" + ",".join(["lol"] * 9) + "]\n" + "".join(
        f"{name}: &{name} [" + ",".join([f"*{previous}"] * 9) + "]\n" for previous, name in zip("abcdefgh", "bcdefghi")
    )
    (folder / "alias-bomb.md").write_text(f"---\n{bomb}title: *i\n---\n# Bomb\n\nText.\n")
    (folder / "shortcode-spaces.md").write_text("# Spaces\n\n{{< a" + " " * 2500 + "\n")
    (folder / "shortcode-openers.md").write_text("# Openers\n\n" + "{{< a " * 4000 + "\n")
    (folder / "includes").mkdir(exist_ok=True)
    for level in range(1, 8):
        calls = f'{{{{< include "l{level + 1}.md" >}}}} ' * 10 if level < 7 else ""
        (folder / "includes" / f"l{level}.md").write_text(f"Level {level} text. {calls}\n")
    (folder / "fan-out.md").write_text("# Fan-out\n\n" + '{{< include "l1.md" >}}\n' * 10)
    (folder / "nested.html").write_text("<blockquote>x " * 4000)
    levels = [".. |l0| replace:: lol"] + [f".. |l{n}| replace:: " + " ".join([f"|l{n - 1}|"] * 10) for n in range(1, 5)]
    (folder / "substitutions.rst").write_text("Title\n=====\n\n" + "\n".join(levels) + "\n\nuse |l4| |l4|\n")
    import docx

    document = docx.Document()
    table = document.add_table(rows=30, cols=40)
    table.cell(0, 0).merge(table.cell(29, 39)).text = "One merged cell. " * 20
    buffer = io.BytesIO()
    document.save(buffer)
    (folder / "merged.docx").write_bytes(buffer.getvalue())


def snapshot(settings, embedder) -> dict:
    """What a user can observe of a store: its chunks, its manifest, keyword and dense results."""
    from rag.index.keyword import KeywordIndex
    from rag.index.store import Store
    from rag.search.retrieval import Retriever

    store = Store(settings)
    chunks: dict[str, tuple[str, str]] = {}
    if store.exists():
        for ids, texts, metadatas in store.iter_all():
            chunks.update({i: (m["source_key"], t) for i, t, m in zip(ids, texts, metadatas)})
    manifest = {
        key: (record.file_hash, record.chunk_count, record.complete, record.doc_type)
        for key, record in store.file_records().items()
    }
    index = KeywordIndex.open(store, settings.data_dir)
    retriever = Retriever(settings, store=store, embedder=embedder)
    return {
        "chunks": chunks,
        "manifest": manifest,
        "bm25 ids": sorted(index.ids),
        "bm25 results": {q: ranking(index.search(q, 5)) for q in QUERIES},
        "dense results": {
            q: ranking([(p.id, p.dense_score) for p in retriever.search(q, k=5, mode="dense").passages])
            for q in QUERIES
        },
    }


def ranking(hits: list[tuple[str, float]]) -> tuple[tuple[float, ...], frozenset[str]]:
    """The scores, and the ids that beat the last one: chunks with equal scores may come in either order
    (the order of the chunks in the store differs after a resumed ingest), anything else must match."""
    scores = tuple(round(score, 4) for _, score in hits)
    return scores, frozenset(i for i, score in hits if scores and round(score, 4) > scores[-1])


def differences(got: dict, want: dict) -> list[str]:
    found = []
    for name in want:
        if got[name] != want[name]:
            if isinstance(want[name], dict):
                keys = sorted(set(got[name]) ^ set(want[name]))[:3] or [
                    k for k in want[name] if got[name].get(k) != want[name][k]
                ][:3]
                found.append(f"{name} differ (e.g. {keys})")
            else:
                found.append(f"{name} differ")
    return found


def drill(
    runs: int,
    seed: int,
    files: int,
    work: Path,
    embedder=None,
    say=print,
    hostile: bool = False,
    swap_kills: bool = False,
) -> list[str]:
    """Returns the differences found (empty when the killed-and-resumed store matches a clean one)."""
    from rag.config import Settings
    from rag.index.embedding import Embedder
    from rag.ingest.pipeline import ingest

    embedder = embedder or Embedder()
    rng = random.Random(seed)
    corpus = work / "corpus"
    corpus.mkdir(parents=True)
    for number in range(files):
        write_doc(corpus / f"note-{number:02}.md", rng, rng.randint(2, 8))
    if hostile:
        write_hostile_files(corpus / "hostile")
    data = work / "drilled"
    problems: list[str] = []
    previous = os.getcwd()
    os.chdir(work)  # root labels ("corpus") are the same for the children and for this process
    try:
        for run in range(1, runs + 1):
            kill = kill_an_ingest(work, data, rng, run)
            say(f"run {run}: {'reindex' if kill.reindex else 'ingest'} killed after {kill.after_events} events "
                f"+ {kill.delay:.3f} s" + ("" if kill.killed else " (it had finished)"))
            edit_corpus(corpus, rng)
        if swap_kills:
            for after in range(SWAP_OPERATIONS + 1):
                killed = swap_kill(work, data, after)
                say(f"reindex killed after {after} of the {SWAP_OPERATIONS} steps of its swap")
                if not killed:
                    problems.append(f"the reindex to kill after {after} swap steps did not get there (a failed run?)")
                edit_corpus(corpus, rng)
        settings = Settings(_env_file=None, data_dir=data, chunk_tokens=CHUNK_TOKENS)
        ingest([Path("corpus")], settings, embedder=embedder)
        clean = Settings(_env_file=None, data_dir=work / "clean", chunk_tokens=CHUNK_TOKENS)
        ingest([Path("corpus")], clean, embedder=embedder)
        problems = differences(snapshot(settings, embedder), snapshot(clean, embedder))
    finally:
        os.chdir(previous)
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="ingests to kill before the one that finishes")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--files", type=int, default=12)
    parser.add_argument("--hostile", action="store_true", help="add the hostile files of issue 24 to the corpus")
    parser.add_argument("--swap-kills", action="store_true", help="then SIGKILL a reindex at each step of its swap")
    parser.add_argument("--keep", type=Path, help="work in this (new) folder and keep it")
    args = parser.parse_args(argv)
    options = {"hostile": args.hostile, "swap_kills": args.swap_kills}
    if args.keep:
        args.keep.mkdir(parents=True)
        problems = drill(args.runs, args.seed, args.files, args.keep.resolve(), **options)
    else:
        with tempfile.TemporaryDirectory(prefix="fault-drill-") as work:
            problems = drill(args.runs, args.seed, args.files, Path(work), **options)
    for problem in problems:
        print(f"MISMATCH: {problem}")
    print("the store matches a clean ingest" if not problems else f"{len(problems)} mismatches")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
