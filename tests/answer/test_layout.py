"""How an offline answer is written out: "See also", near-miss names, the length a layout takes."""

from rag.answer.events import CitationEvent, TextDelta
from rag.answer.layout import join_names, layout_length, quoted, see_also
from rag.answer.quotes import units_of
from rag.search.passages import Passage


def passage(n: int, title: str, section: str, text: str) -> Passage:
    return Passage(f"p{n}", text, f"references/{n}.md", f"corpus/references/{n}.md", title, section, "reference", 0, 0)


def test_see_also_names_each_document_once_with_the_sections_used():
    passages = [
        passage(1, "Rate limiting", "Algorithms > Token bucket", "A token bucket refills at a fixed rate."),
        passage(2, "Rate limiting", "Algorithms > Sliding window", "A sliding window counts recent requests."),
        passage(3, "ADR-0006: Redis for rate limiting", "", "We keep the buckets in a dedicated Redis."),
    ]
    assert see_also(passages) == (
        "Rate limiting (Token bucket, Sliding window); ADR-0006: Redis for rate limiting"
    )


def test_a_thing_named_by_its_kind_takes_the_article_and_the_last_name_takes_or():
    assert join_names(["returns API"]) == "the returns API"
    assert join_names(["returns API", "ADR-0015", "max_poll_records"]) == (
        "the returns API, ADR-0015 or max_poll_records"
    )


def test_a_unit_from_another_section_costs_its_label_and_title_too():
    one = passage(1, "Caching", "Cache-aside", "On a miss the service loads the value and stores it. It sets a TTL.")
    other = passage(2, "Caching strategies compared", "Write-through", "A write-through cache writes on every change.")
    first, second = units_of(one.text)[0], units_of(other.text)[0]
    second.passage_index = 1
    same_section = layout_length([first], [one, other])
    assert layout_length([first, second], [one, other]) - same_section > len(second.text) + len(other.title)


def test_rows_of_one_table_are_written_as_one_table_on_lines_of_their_own():
    text = (
        "Some changes rewrite the whole table.\n\n"
        "| Operation | What PostgreSQL does |\n| --- | --- |\n"
        "| Change `int` to `bigint` | Full table rewrite |\n| Drop column | Catalog change only |"
    )
    table = passage(1, "Zero-downtime migrations", "Safe and unsafe operations", text)
    sentence, *rows = units_of(text)
    events = list(quoted([sentence, *rows], [table], " ", set()))
    answer = "".join(event.text for event in events if isinstance(event, TextDelta))
    assert answer == (
        "Some changes rewrite the whole table. [1]\n\n"  # the table does not start on the sentence's line...
        "| Operation | What PostgreSQL does |\n| --- | --- |\n"  # ...and its rows share one header row
        "| Change `int` to `bigint` | Full table rewrite |\n| Drop column | Catalog change only |\n\n[1]\n\n"
    )
    cited = [event.citation.quote for event in events if isinstance(event, CitationEvent)]
    assert cited == [sentence.text, "| Operation | What PostgreSQL does |", *(row.quotes[-1] for row in rows)]
