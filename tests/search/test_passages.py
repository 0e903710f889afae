"""Passages: chunks of a section joined back into the document's text, and near-copies collapsed."""

from __future__ import annotations

from rag.search.passages import Passage, collapse_near_duplicates, join_chunks

JITTER = (
    "Retries of many clients that failed at the same moment arrive together again unless each delay is "
    "randomised: full jitter picks the sleep uniformly between zero and the exponential backoff cap, which "
    "spreads the retry wave and lets the dependency recover."
)


def test_collapse_keeps_the_better_ranked_copy_and_distinct_passages():
    def passage(i: str, text: str) -> Passage:
        return Passage(i, text, f"{i}.md", f"root/{i}.md", i, "", "reference", 0, 0)

    near_copy = JITTER.replace("lets the dependency recover", "lets a dependency recover")
    kept = collapse_near_duplicates(
        [
            passage("a", JITTER),
            passage("b", "Each retry waits twice as long."),
            passage("c", near_copy),
            passage("d", JITTER),
        ]
    )
    assert [p.id for p in kept] == ["a", "b"]
    short = collapse_near_duplicates([passage("x", "Use a cache."), passage("y", "Use a queue.")])
    assert [p.id for p in short] == ["x", "y"], "short passages that merely share words are not duplicates"


def test_join_chunks():
    assert join_chunks(["First paragraph.", "Second paragraph."]) == "First paragraph.\n\nSecond paragraph."
    cut = (
        "The first part of a long paragraph that was cut here, and the overlap",
        "cut here, and the overlap continues into the second piece.",
    )
    assert join_chunks(list(cut)) == (
        "The first part of a long paragraph that was cut here, and the overlap continues into the second piece."
    )
    assert join_chunks(["Ends with a dot.", ". Starts with one."]) == "Ends with a dot.\n\n. Starts with one."
    assert join_chunks(["only"]) == "only" and join_chunks([]) == ""
