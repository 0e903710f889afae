"""Retrieval on a small generated corpus, ingested for real (real model, real Chroma, real BM25).

The corpus is written so that each behaviour has something to bite on: a rare error code that only
keywords can pin down, a passage that only a paraphrase reaches, the same paragraph copied into two
files, a long section split into several chunks, reference and team documents on the same topic.
"""

from __future__ import annotations

import json
import textwrap

import bm25s
import pytest
from conftest import make_settings, write_tree

from rag.index.keyword import KeywordIndex
from rag.index.keyword_segments import BM25_PARAMETERS
from rag.ingest.pipeline import ingest
from rag.search.confidence import abstain_bar
from rag.search.passages import Passage
from rag.search.retrieval import Retriever
from rag.text.words import content_words, words

JITTER = (
    "Retries of many clients that failed at the same moment arrive together again unless each delay is "
    "randomised: full jitter picks the sleep uniformly between zero and the exponential backoff cap, which "
    "spreads the retry wave and lets the dependency recover."
)

REPLICATION = [
    "The leader appends every client command to its own log first and then sends AppendEntries messages to each "
    "follower carrying the new entries together with the index and term of the entry that precedes them.",
    "A follower accepts the entries only when its log contains an entry at that preceding index with the same "
    "term; otherwise it rejects the message and the leader walks its nextIndex pointer for that follower backwards.",
    "Walking backwards one entry at a time is slow after a long partition, so followers reply with the first "
    "index of the conflicting term, letting the leader skip a whole term of mismatched entries in one round trip.",
    "Once a majority of the voters has stored an entry, the leader marks it committed, applies it to its state "
    "machine and tells the followers the new commit index in the next heartbeat or AppendEntries message.",
    "An entry from an earlier term is never committed by counting replicas alone; it becomes committed only "
    "indirectly, when an entry of the leader's current term that follows it reaches a majority of the voters.",
    "Followers apply committed entries strictly in log order, which is what makes every replica of the state "
    "machine pass through exactly the same sequence of states and answer reads identically once caught up.",
    "Snapshots bound the size of the log: each node serialises from time to time its state machine, records the last "
    "included index and term, and discards the prefix of the log that the snapshot already covers.",
    "A follower that lags behind the first entry the leader still holds receives the snapshot itself through "
    "InstallSnapshot and then continues with ordinary AppendEntries from the index right after the snapshot.",
]

# one paragraph longer than a chunk: chunking cuts it into overlapping pieces
LONG_PARAGRAPH = " ".join(f"Step {n} of the failover: replica {n} must have replayed the log." for n in range(1, 25))

CORPUS = {
    "references/gateway-errors.md": """
        ---
        title: API gateway error catalogue
        tags: [gateway, errors]
        ---
        # API gateway error catalogue

        ## Reading an error code

        Every ERR code that the gateway returns identifies one specific failure. Look codes up in this
        catalogue: each entry explains the failure behind the code and what to do about it.

        ## Upstream certificate failures

        When the gateway cannot validate the certificate chain presented by an upstream, it fails the call with
        ERR-7731 and logs the upstream host name. Renew the upstream certificate or add its intermediate
        authority to the trust bundle of the gateway.

        ## Upstream connection resets

        When an upstream resets the connection before sending a response, the gateway fails the call with
        ERR-7730 and retries it once on another instance if the route is marked idempotent.

        ## Upstream deadlines

        When an upstream does not answer within the deadline of its route, the gateway gives up and returns
        status 504 to the caller. Deadlines are set per route and should sit below the caller's own deadline.

        ## Oversized bodies

        Bodies larger than the configured limit are refused with status 413 before routing, so that a single
        huge upload cannot exhaust the gateway's buffers.
        """,
    "references/api-errors.md": """
        ---
        title: Designing error responses
        tags: [api, errors]
        ---
        # Designing error responses

        ## Error codes

        Every error response carries a stable, machine-readable error code and a human-readable message.
        Clients branch on the code and never parse the message; the catalogue of codes is documented and
        versioned like the rest of the API.

        ## Problem details

        Use the problem details format: a type URI, a title, the HTTP status, a detail string and an instance
        identifier, so that every failure looks the same to clients.
        """,
    "references/autoscaling.md": """
        ---
        title: Autoscaling workloads
        tags: [kubernetes, scaling]
        ---
        # Autoscaling workloads

        ## Horizontal pod autoscaling

        The horizontal pod autoscaler adds replicas when average CPU utilisation stays above its target for
        several minutes and removes them again when traffic subsides, within the minimum and maximum replica
        counts of the deployment.

        ## Scaling on queue depth

        Consumers of a queue scale better on the depth of the backlog than on CPU, because a consumer waiting on
        a slow dependency shows little CPU while messages pile up.
        """,
    "references/retries.md": f"""
        ---
        title: Retries and backoff
        tags: [resilience]
        ---
        # Retries and backoff

        ## Exponential backoff

        Each retry waits twice as long as the previous one, up to a cap, so that a struggling dependency gets
        room to recover instead of a constant hammering from its callers.

        ## Jitter

        {JITTER}

        ## Retry budgets

        A retry budget limits retries to a fraction of the normal request rate, so that retries can never
        multiply the load on a dependency that is already failing.
        """,
    "team/payments-guidelines.md": f"""
        ---
        title: Payments team guidelines
        tags: [payments]
        ---
        # Payments team guidelines

        ## Idempotency

        Every call to the card processor carries an idempotency key derived from the payment identifier, so that
        a retried capture never charges a customer twice.

        ## Jitter

        {JITTER}
        """,
    "team/adr-0006-rate-limiting.md": """
        ---
        title: "ADR 0006: Redis token buckets for public API rate limiting"
        tags: [adr, rate-limiting]
        ---
        # ADR 0006: Redis token buckets for public API rate limiting

        ## Decision

        The public API rate-limits each API key with a token bucket kept in Redis: a bucket of 100 tokens that
        refills at 10 tokens per second, checked atomically by a Lua script at the edge.

        ## Consequences

        Clients over their limit get status 429 with a Retry-After header telling them when a token is back.
        """,
    "references/rate-limiting.md": """
        ---
        title: Rate limiting algorithms
        tags: [api, rate-limiting]
        ---
        # Rate limiting algorithms

        ## Token bucket

        A token bucket refills at a fixed rate and lets a client spend saved tokens in a short burst, which
        suits human-driven traffic that arrives in clumps.

        ## Sliding window log

        A sliding window log keeps the timestamp of every request in the window; exact, but its memory rises with
        the allowed rate, so it suits low limits such as login attempts.
        """,
    "references/kafka.md": """
        ---
        title: Kafka topics and consumer groups
        tags: [kafka, streaming]
        ---
        # Kafka topics and consumer groups

        ## Partitions

        A topic is split into partitions; ordering holds within a partition only, and the partition key decides
        which events must stay in order relative to each other.

        ## Consumer groups

        Each partition is read by exactly one consumer of a group at a time, so the partition count caps the
        parallelism of the group.
        """,
    "team/orders-database.md": """
        # Orders database

        The orders service keeps its rows in PostgreSQL 16, reached through PgBouncer in transaction mode.
        """,
    "references/raft.md": "\n".join(
        [
            "---",
            "title: Raft consensus",
            "tags: [consensus]",
            "---",
            "# Raft consensus",
            "",
            "## Leader election",
            "",
            "Each node starts as a follower and becomes a candidate when it hears no heartbeat within a "
            "randomised election timeout; it votes for its own candidacy and asks the others for their votes.",
            "",
            "## Log replication",
            "",
            "\n\n".join(REPLICATION),
            "",
            "## Failover runbook",
            "",
            LONG_PARAGRAPH,
            "",
            "## Membership changes",
            "",
            "Changing the set of voters one node at a time keeps any two majorities overlapping, so two leaders "
            "can never be elected for the same term during the change.",
        ]
    ),
}

PARAPHRASE = "How can the number of servers grow by itself during a busy period?"
ERROR_CODE_QUERY = "what does ERR-7731 mean?"
OFF_TOPIC = "What is a good recipe for sourdough bread with a crisp crust?"


@pytest.fixture(scope="module")
def corpus_store(tmp_path_factory, embedder):
    """The generated corpus ingested once for this module: ``(settings, corpus root, retriever)``."""
    base = tmp_path_factory.mktemp("retrieval")
    corpus = write_tree(base / "corpus", CORPUS)
    settings = make_settings(base / "data", chunk_tokens=128)  # small chunks: a section spans several
    report = ingest([corpus], settings, embedder=embedder)
    assert not report.files_failed and report.files_added == len(CORPUS)
    return settings, corpus, Retriever(settings, embedder=embedder)


@pytest.fixture(scope="module")
def retriever(corpus_store) -> Retriever:
    return corpus_store[2]


def rank_of(passages: list[Passage], predicate) -> int | None:
    """1-based rank of the first passage matching ``predicate``."""
    return next((rank for rank, p in enumerate(passages, start=1) if predicate(p)), None)


def is_error_code(p: Passage) -> bool:
    return "ERR-7731" in p.text


def is_autoscaler(p: Passage) -> bool:
    return p.source == "references/autoscaling.md"


# -- hybrid search ------------------------------------------------------------------------------------


def test_hybrid_finds_an_exact_rare_keyword_that_dense_alone_ranks_lower(retriever):
    hybrid = retriever.search(ERROR_CODE_QUERY, k=10)
    dense = retriever.search(ERROR_CODE_QUERY, k=10, mode="dense")
    keyword = retriever.search(ERROR_CODE_QUERY, k=10, mode="keyword")
    assert rank_of(keyword.passages, is_error_code) == 1
    assert rank_of(hybrid.passages, is_error_code) == 1
    dense_rank = rank_of(dense.passages, is_error_code)
    assert dense_rank is None or dense_rank > 1, "the corpus no longer tests what it should: dense found it alone"
    top = hybrid.passages[0]
    assert top.keyword_score and top.keyword_score > 0 and top.dense_score is not None
    assert top.source == "references/gateway-errors.md" and top.section == "Upstream certificate failures"


def test_keyword_search_reads_a_short_name_as_the_word_the_documents_spell_out(retriever):
    # the documents write "PostgreSQL"; people ask about "postgres"
    found = retriever.search("postgres", k=3, mode="keyword").passages
    assert found and found[0].source == "team/orders-database.md"
    # a word that begins many indexed words stands for none of them
    assert retriever.keyword._known_forms("xyzzyq") == []


def test_hybrid_finds_a_paraphrase_that_keywords_alone_miss(retriever):
    query_terms = set(content_words(PARAPHRASE))
    target_text = next(text for path, text in CORPUS.items() if path == "references/autoscaling.md")
    assert not query_terms & set(words(target_text)), "the paraphrase must share no word with its answer"
    keyword = retriever.search(PARAPHRASE, k=10, mode="keyword")
    assert rank_of(keyword.passages, is_autoscaler) is None
    dense = retriever.search(PARAPHRASE, k=10, mode="dense")
    assert rank_of(dense.passages, is_autoscaler) == 1
    hybrid = retriever.search(PARAPHRASE, k=10)
    # every chunk of this small store is a keyword candidate, so the noise words of the other files weigh more
    # than they can among the 50 candidates of a real store (keywords weigh 0.75, chosen on two question sets)
    assert rank_of(hybrid.passages, is_autoscaler) <= 4


def test_results_are_ranked_best_first_and_cut_at_k(retriever):
    for mode in ("hybrid", "dense", "keyword"):
        result = retriever.search("retry backoff jitter budget", k=3, mode=mode)
        assert 1 <= len(result.passages) <= 3
        scores = [p.score for p in result.passages]
        assert scores == sorted(scores, reverse=True)
        assert result.mode == mode and result.seconds > 0
        assert len({p.id for p in result.passages}) == len(result.passages)


def test_unknown_mode_is_refused(retriever):
    with pytest.raises(ValueError, match="unknown search mode"):
        retriever.search("anything", mode="sparse")


# -- filters --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["hybrid", "dense", "keyword"])
def test_doc_type_filter(retriever, mode):
    query = "token bucket rate limiting for the public API"
    team = retriever.search(query, k=10, doc_type="team", mode=mode).passages
    reference = retriever.search(query, k=10, doc_type="reference", mode=mode).passages
    assert team and reference
    assert {p.doc_type for p in team} == {"team"}
    assert {p.doc_type for p in reference} == {"reference"}
    assert team[0].source == "team/adr-0006-rate-limiting.md"
    assert reference[0].source == "references/rate-limiting.md"


@pytest.mark.parametrize("mode", ["hybrid", "dense", "keyword"])
def test_source_filter_by_relative_or_display_path(corpus_store, retriever, mode):
    _, corpus, _ = corpus_store
    query = "retry backoff jitter"
    by_relpath = retriever.search(query, k=10, source="references/retries.md", mode=mode).passages
    assert by_relpath and {p.source for p in by_relpath} == {"references/retries.md"}
    display = by_relpath[0].path
    assert display.endswith("references/retries.md") and display != "references/retries.md"
    by_display = retriever.search(query, k=10, source=display, mode=mode).passages
    assert [p.id for p in by_display] == [p.id for p in by_relpath]
    both = retriever.search(query, k=10, source="team/payments-guidelines.md", doc_type="reference", mode=mode)
    assert both.passages == []
    assert retriever.search(query, k=10, source="references/nope.md", mode=mode).passages == []


# -- near duplicates and widening ---------------------------------------------------------------------


def test_the_same_paragraph_in_two_files_is_returned_once(retriever):
    copies = retriever.store.get(where={"section": "Jitter"})
    assert sorted(m["source"] for m in copies["metadatas"]) == ["references/retries.md", "team/payments-guidelines.md"]
    for mode in ("hybrid", "dense", "keyword"):
        passages = retriever.search("full jitter randomised retry delay", k=10, mode=mode).passages
        jitter = [p for p in passages if p.section == "Jitter"]
        assert len(jitter) == 1, (mode, [(p.source, p.section) for p in passages])
        assert passages[0].section == "Jitter"
        # the other passages of both files are still there: only the copy went
        assert any(p.source == "team/payments-guidelines.md" and p.section != "Jitter" for p in passages) or any(
            p.source == "references/retries.md" and p.section != "Jitter" for p in passages
        )


def test_widen_adds_the_neighbouring_chunks_of_the_same_section(retriever):
    section = retriever.search("followers reply with the first index of the conflicting term", k=1, mode="keyword")
    [hit] = section.passages
    assert hit.section == "Log replication"
    chunks = retriever.neighbourhood(hit)
    assert len(chunks) >= 3, "the section must span several chunks for this test"
    positions = [c.position for c in chunks]
    middle = chunks[1]
    [widened] = retriever.widen([middle])
    assert widened.text == middle.text and widened.id == middle.id
    assert widened.context == "\n\n".join(c.text for c in chunks[0:3])
    assert widened.full_text == widened.context
    # the first chunk of the section gains only the chunk after it: the previous section is not pulled in
    [first] = retriever.widen([chunks[0]])
    assert first.context == f"{chunks[0].text}\n\n{chunks[1].text}"
    assert "own candidacy" not in first.context
    [last] = retriever.widen([chunks[-1]])
    assert last.context == f"{chunks[-2].text}\n\n{chunks[-1].text}"
    assert "one node at a time" not in last.context
    assert positions == sorted(positions)
    # every replication paragraph is in the section, in order
    assert "\n\n".join(c.text for c in chunks).split() == "\n\n".join(REPLICATION).split()


def test_widen_joins_a_paragraph_cut_into_overlapping_chunks_without_repeating_it(retriever):
    hit = retriever.search("replica 5 has replayed the log", k=1, mode="keyword").passages[0]
    pieces = retriever.neighbourhood(hit)
    assert hit.section == "Failover runbook" and len(pieces) >= 3
    assert sum(len(p.text.split()) for p in pieces) > len(LONG_PARAGRAPH.split()), "the pieces overlap"
    [middle] = retriever.widen([pieces[1]])
    context = " ".join(middle.context.split())
    assert context in LONG_PARAGRAPH, "the widened text is a stretch of the paragraph, with nothing repeated"
    assert context.startswith(" ".join(pieces[0].text.split()))
    assert context.endswith(" ".join(pieces[2].text.split()))


def test_search_with_widen_gives_every_passage_a_context(retriever):
    result = retriever.search("how does a follower catch up after a long partition", k=4, widen=True)
    for passage in result.passages:
        assert passage.text in passage.context
    replication = [p for p in result.passages if p.section == "Log replication"]
    assert replication and any(len(p.context) > len(p.text) for p in replication)


# -- the keyword index follows the store ------------------------------------------------------------


def keyword_meta(settings) -> dict[str, str]:
    import sqlite3

    with sqlite3.connect(KeywordIndex.directory(settings.data_dir) / "index.sqlite3") as connection:
        return dict(connection.execute("SELECT key, value FROM meta").fetchall())


def test_keyword_index_is_updated_after_an_ingest_changes_the_store_and_reused_otherwise(tmp_path, embedder):
    corpus = write_tree(tmp_path / "corpus", {k: CORPUS[k] for k in ("references/kafka.md", "references/retries.md")})
    settings = make_settings(tmp_path / "data")
    ingest([corpus], settings, embedder=embedder)
    first = keyword_meta(settings)

    retriever = Retriever(settings, embedder=embedder)
    loaded = retriever.keyword
    assert loaded.revision == retriever.store.revision() == first["revision"] != ""
    assert retriever.search("zanzibarquux", mode="keyword").passages == []
    assert retriever.keyword is loaded, "an unchanged store reuses the loaded index"
    assert keyword_meta(settings) == first, "the index persisted by ingest is read, not written"

    # an ingest that changes nothing leaves the index alone
    report = ingest([corpus], settings, embedder=embedder)
    assert report.files_unchanged == 2 and not report.changed
    assert keyword_meta(settings) == first
    assert retriever.keyword is loaded

    # an ingest that changes the store updates it, and a running retriever picks the update up
    (corpus / "references" / "kafka.md").write_text(
        textwrap.dedent(CORPUS["references/kafka.md"]) + "\n## Naming\n\nTopics of the zanzibarquux team start "
        "with its name.\n",
        encoding="utf-8",
    )
    report = ingest([corpus], settings, embedder=embedder)
    assert report.files_updated == 1
    updated = keyword_meta(settings)
    assert updated["build"] == first["build"] and int(updated["generation"]) == int(first["generation"]) + 1
    found = retriever.search("zanzibarquux", mode="keyword").passages
    assert [p.section for p in found] == ["Naming"]
    assert retriever.keyword is not loaded and retriever.keyword.revision == retriever.store.revision()
    assert keyword_meta(settings) == updated, "the retriever read the update, it did not make another"

    # a removed file disappears from keyword results too
    (corpus / "references" / "kafka.md").unlink()
    ingest([corpus], settings, embedder=embedder)
    assert retriever.search("zanzibarquux", mode="keyword").passages == []

    # an index that went missing is built again on first use
    import shutil

    shutil.rmtree(KeywordIndex.directory(settings.data_dir))
    fresh = Retriever(settings, embedder=embedder)
    assert fresh.search("jitter", mode="keyword").passages
    assert keyword_meta(settings)["build"] != first["build"]
    assert keyword_meta(settings)["revision"] == fresh.store.revision()


def test_an_empty_store_gives_no_passages_and_no_confidence(tmp_path, embedder):
    retriever = Retriever(make_settings(tmp_path / "data"), embedder=embedder)
    for mode in ("hybrid", "dense", "keyword"):
        result = retriever.search("anything at all", mode=mode)
        assert result.passages == [] and result.confidence == 0.0


# -- confidence ----------------------------------------------------------------------------------------


def test_confidence_is_lower_for_an_off_topic_question(corpus_store, retriever):
    settings = corpus_store[0]
    on_topic = retriever.search("What does the horizontal pod autoscaler do when CPU stays above its target?")
    off_topic = retriever.search(OFF_TOPIC)
    assert on_topic.confidence > off_topic.confidence + 0.25
    assert on_topic.confidence >= abstain_bar(settings.abstain_threshold, retriever) > off_topic.confidence
    assert 0.0 <= off_topic.confidence <= 1.0 and on_topic.confidence <= 1.0
    assert on_topic.confidence == pytest.approx(
        max(
            p.dense_score or 0
            for p in retriever.search(
                "What does the horizontal pod autoscaler do when CPU stays above its target?", mode="dense"
            ).passages
        )
    )


# -- ranking that uses the document ---------------------------------------------------------------------

HEALTH_GUIDE = """# Upstream health

## Passive checks

A backend server that fails a request is counted against max_fails. After max_fails failed attempts within
fail_timeout the server is taken out of rotation until fail_timeout has passed.

## Active checks

Health probes request a page from every backend server on an interval. A server that fails the probe is
taken out of rotation, and it returns once it passes the probe again.

## Single server groups

With one server in the group, failed attempts are ignored: the only backend always keeps receiving requests.
"""

GLOSSARY = """# Glossary

## Rotation

Taken out of rotation: why a failing backend server is taken out of rotation (it no longer gets requests).

## Worker

Worker: a process that handles connections.

## Zone

Zone: shared memory for counters.
"""


FILLER_WORDS = (
    "invoice ledger tariff courier parcel warehouse pallet forklift barcode shipment customs manifest freight "
    "dock carrier route depot truck label scanner tracking consignee pickup dispatch inventory shelf aisle "
    "picker packing carton stock reorder supplier vendor receipt refund voucher coupon basket checkout cashier"
).split()


@pytest.fixture(scope="module")
def document_store(tmp_path_factory, embedder) -> Retriever:
    """A guide whose every section is about the question, beside a glossary line that echoes its words, among
    300 one-chunk files on other topics (so that the candidates of a search are a small share of the store)."""
    import random

    rng = random.Random(11)
    docs = {"guides/upstream-health.md": HEALTH_GUIDE, "glossary.md": GLOSSARY}
    for n in range(300):
        docs[f"filler/note-{n}.md"] = f"# Note {n}\n\n" + " ".join(rng.choices(FILLER_WORDS, k=40)) + ".\n"
    base = tmp_path_factory.mktemp("document-score")
    corpus = write_tree(base / "corpus", docs)
    settings = make_settings(base / "data", chunk_tokens=64)
    ingest([corpus], settings, embedder=embedder)
    return Retriever(settings, embedder=embedder)


def test_a_file_that_matches_in_several_places_ranks_above_a_single_echoing_line(document_store):
    query = "Why is my failing backend server taken out of rotation?"
    dense = document_store.search(query, k=5, mode="dense").passages
    assert dense[0].source == "glossary.md", "the glossary line no longer wins alone"
    passages = document_store.search(query, k=5).passages
    assert passages[0].source == "guides/upstream-health.md"
    assert [p.source for p in passages].count("guides/upstream-health.md") == 3  # only its best chunk moved up
    assert passages[1].source == "glossary.md"


def test_document_score_lifts_only_the_best_chunk_by_its_next_two_and_only_beyond_what_its_size_brings():
    from rag.search.ranking import document_scores

    scores = {"a1": 0.10, "a2": 0.08, "a3": 0.06, "a4": 0.05, "b1": 0.15}
    files = {"a1": "a.md", "a2": "a.md", "a3": "a.md", "a4": "a.md", "b1": "b.md"}
    lifted = document_scores(scores, files, store_size=500, document_sizes={"a.md": 10, "b.md": 1}, weight=0.5)
    by_chance = 5 * 10 / 500  # of 5 candidates from 500 chunks, a file of 10 chunks holds 0.1 by chance
    assert lifted["a1"] == pytest.approx(0.10 + 0.5 * (4 - by_chance) / 4 * (0.08 + 0.06))  # a4 does not count
    assert {c: lifted[c] for c in ("a2", "a3", "a4", "b1")} == {c: scores[c] for c in ("a2", "a3", "a4", "b1")}
    # a long file whose candidates are what its length brings: no lift (nor in a store that is all candidates)
    assert document_scores(scores, files, store_size=100, document_sizes={"a.md": 80, "b.md": 1}) == scores
    assert document_scores(scores, files, store_size=5, weight=0.5) == scores


def test_the_keyword_list_weighs_what_its_peak_says_against_the_dense_lists():
    from rag.search.ranking import KEYWORD_WEIGHT, keyword_weight

    dense = [0.62, 0.55, 0.54, 0.53, 0.52, 0.51, 0.50, 0.49]
    peaked = [14.0, 3.1, 2.9, 2.8, 2.6, 2.5, 2.4, 2.2]  # one chunk holds the query's rare words
    flat = [5.1, 5.0, 4.9, 4.9, 4.8, 4.8, 4.7, 4.7]  # common words, every chunk about as good
    assert keyword_weight(dense, peaked) > KEYWORD_WEIGHT > keyword_weight(dense, flat)
    assert keyword_weight(dense, dense) == pytest.approx(KEYWORD_WEIGHT)  # equally peaked: equal weights
    assert keyword_weight([0.5, 0.5, 0.5], peaked) == KEYWORD_WEIGHT  # a flat dense list says nothing either way
    assert keyword_weight(dense, []) == 0.0


def test_a_keyword_index_persisted_with_other_bm25_parameters_is_rebuilt_with_ours(tmp_path, embedder):
    import sqlite3

    corpus = write_tree(tmp_path / "corpus", {k: CORPUS[k] for k in ("references/kafka.md", "references/retries.md")})
    settings = make_settings(tmp_path / "data")
    ingest([corpus], settings, embedder=embedder)
    directory = KeywordIndex.directory(settings.data_dir)
    with sqlite3.connect(directory / "index.sqlite3") as connection:  # what bm25s's defaults would have written
        connection.execute("UPDATE meta SET value = ? WHERE key = 'bm25'", (json.dumps({"k1": 1.5, "b": 0.75}),))
        connection.execute("DELETE FROM postings WHERE term != 'jitter'")
    # and the whole-index files of the version before segments, which nothing reads any more
    old = bm25s.BM25(k1=1.5, b=0.75)
    old.index(bm25s.tokenize(["jitter"], return_ids=False, show_progress=False), show_progress=False)
    old.save(str(directory))
    (directory / "chunks.json").write_text(json.dumps({"revision": "old", "ids": ["x"]}))

    retriever = Retriever(settings, embedder=embedder)
    found = retriever.search("kafka", mode="keyword").passages  # the stale index knows only "jitter"
    assert found and all("kafka" in p.source for p in found)
    assert json.loads(keyword_meta(settings)["bm25"]) == BM25_PARAMETERS
    assert [path.name for path in directory.iterdir() if not path.name.startswith("index.sqlite3")] == []
