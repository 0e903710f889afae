"""Answer evaluation: facts found the way a reader sees them, and the ceiling the passages set."""

from __future__ import annotations

from rag.answer.events import Final
from rag.app.answer_eval import Scored, format_summary, has_fact, says_not_covered, summarise
from rag.app.evaluation import Question
from rag.search.passages import Passage

LUA = "The bucket is read, refilled and spent in one Lua script, so concurrent requests cannot spend the last token."
TTL = "Each key gets a TTL equal to the time the bucket takes to refill, so idle clients leave no keys behind."


def passage(text: str) -> Passage:
    return Passage("c1", text, "rate-limiting.md", "corpus/rate-limiting.md", "Rate limiting", "Token bucket", "", 0, 0)


def scored(answer: str, facts: list[str], passages: list[Passage], abstained: bool = False) -> Scored:
    question = Question("q1", "How do we stop two requests spending the last token?", ["rate-limiting.md"], facts=facts)
    final = Final(question.question, question.question, answer, [], passages, abstained, "extractive", "", "", 0.6)
    return Scored(question, final, 0.1, [fact for fact in facts if has_fact(answer, fact)])


def test_a_fact_is_found_whatever_the_markup_markers_and_case():
    assert has_fact("Run it in **one `Lua` script** [1].", "one Lua script")
    assert has_fact("Keys get a ttl [2]", "TTL | time to live")
    assert not has_fact("Keys expire.", "TTL | time to live")


def test_facts_in_the_passages_are_the_most_an_answer_quoting_them_could_hold():
    three = ["one Lua script", "last token", "idle clients"]
    answer = f"{LUA} [1]"  # quotes one of the two sentences: two facts of three
    result = scored(answer, three, [passage(f"{LUA} {TTL}")])
    assert result.fact_share == 2 / 3
    assert result.passages_share == 1.0  # the passage held all three: the third was left out by selection
    missed = scored(answer, three + ["sliding window"], [passage(f"{LUA} {TTL}")])
    assert missed.passages_share == 0.75  # the passages never held "sliding window": retrieval missed it
    summary = summarise([result, missed])
    assert summary["facts_in_passages"] == 0.875 and summary["fact_coverage"] == round((2 / 3 + 2 / 4) / 2, 4)
    assert "facts in its passages (ceiling)" in format_summary({"ours": summary})


def test_an_answer_given_no_passages_has_no_ceiling():
    result = scored(LUA, ["one Lua script"], [])
    assert result.passages_share is None
    assert summarise([result])["facts_in_passages"] is None


def test_an_answer_says_not_covered_only_when_it_names_what_is_missing():
    result = scored("The knowledge base says nothing about the returns API; the closest is below.", [], [])
    assert says_not_covered(result.final, ["returns API"])
    assert not says_not_covered(result.final, ["courier payout API"])
