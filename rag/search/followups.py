"""Follow-ups: a question that leans on the conversation made into a standalone query before it is searched.

Owns what a follow-up may lean on (the last question and the sections its answer cited), how a question is
recognised as a follow-up, and the deterministic rewrite that borrows the topic words it lacks. Providers that
have a language model may rewrite with it and fall back on this one.
"""

from __future__ import annotations

import re
from dataclasses import replace

from rag.search.retrieval import Retriever, SearchResult
from rag.text.words import content_words

# What an LLM provider asks its model to turn a follow-up into a standalone search query.
REWRITE_PROMPT = (
    "Rewrite the new question of this conversation as one standalone search query that names its topic "
    "explicitly; if it changes topic, keep it as it is. Reply with the query only.\n\n"
    "Previous turn (its question, then the sections its answer cited):\n{history}\n\nNew question: {question}"
)

FOLLOW_UP = re.compile(
    r"^(?:(?:ok|okay|right|alright|great|thanks|got it|cool|hmm)[,.!]?\s+)?"  # "ok, and where ..."
    r"(and|but|so|also|then|what about|how about|same for|and what|and how|why not|what if)\b|"
    r"\b(it|that|this|those|these|they|them|there|its|the same|instead)\b",
    re.IGNORECASE,
)


# "does that topic", "for those endpoints": a demonstrative after a verb or preposition points at something
# named earlier, in the conversation when nothing comes before it in the question itself
POINTS_BACK = re.compile(
    r"\b(?:does|do|did|is|are|was|were|for|in|on|of|from|with|about|to|has|have|had|can|could|should|would|will)"
    r"\s+(?:that|this|these|those)\s+(?!(?:is|was|are|were|means?|the|a|an|we|you|they|it|our|your|one)\b)\w",
    re.IGNORECASE,
)
CLAUSE_END = re.compile(r"[.!?,;]\s")


FOCUS_PASSAGES = 2  # a follow-up's best passages in the document the last answer rested on, placed first


def looks_like_follow_up(question: str) -> bool:
    """A short question that leans on the conversation ("and with Kafka?"), or one whose first sentence
    points back ("how many partitions does that topic have and how long do we keep the data?"). A pointer
    after the question's own story ("our consumers re-process messages after a rebalance, why is that?")
    refers to the story (a clause comes before it)."""
    text = question.strip()
    if len(content_words(text)) <= 6 and FOLLOW_UP.search(text):
        return True
    pointer = POINTS_BACK.search(text)
    return bool(pointer) and not CLAUSE_END.search(text[: pointer.start()])


def last_turn_context(history: list[dict]) -> list[str]:
    """What a follow-up may lean on: the last question asked and the sources its answer cited (the headings
    an assistant turn lists under ``sources``), never the questions before it."""
    questions = [turn for turn in history if turn.get("role") == "user" and turn.get("content")]
    if not questions:
        return []
    last = questions[-1]
    context = [str(last["content"])]
    after = history[history.index(last) + 1 :]
    for turn in after:
        if turn.get("role") == "assistant":
            context.extend(str(source) for source in turn.get("sources") or [])
    return context


def rewrite_follow_up(question: str, context: list[str]) -> str:
    """Deterministic rewrite: a follow-up borrows the topic words it lacks from the last turn (``context``: the
    last question first, then the headings its answer cited). A question that stands alone is kept as asked."""
    if not context or not looks_like_follow_up(question):
        return question
    own = set(content_words(question))
    borrowed: list[str] = []
    for earlier in context:
        for word in content_words(earlier):
            if word not in own and word not in borrowed:
                borrowed.append(word)
    if not borrowed:
        return question
    return f"{question.strip()} ({' '.join(borrowed[:8])})"


def search_follow_up(
    retriever: Retriever, standalone: str, context: list[str], k: int, doc_type: str | None = None
) -> SearchResult:
    """A follow-up searched as any question, with its best passages in the document the last turn rested on
    placed first: "and when does the circuit breaker open?" after a question on our retry budgets asks about
    the breaker of the retry-budget ADR before any other. That document is the one the last answer cited first
    (the first heading after the question in ``context``), else the best match of the last question."""
    result = retriever.search(standalone, k=k, doc_type=doc_type, widen=True)
    anchor = context[1] if len(context) > 1 else context[0]
    earlier = retriever.search(anchor, k=1, doc_type=doc_type).passages
    if not earlier or not result.passages:
        return result
    focused = retriever.search(
        standalone, k=FOCUS_PASSAGES, doc_type=doc_type, source=earlier[0].source, widen=True
    ).passages
    ids = {passage.id for passage in focused}
    passages = focused + [passage for passage in result.passages if passage.id not in ids]
    return replace(result, passages=passages[: len(result.passages)])
