"""Quotable units: every unit an offline answer may quote reads correctly out of context."""

from __future__ import annotations

from rag.answer.quotes import units_of


def texts(text: str) -> list[str]:
    return [unit.text for unit in units_of(text)]


def test_a_sentence_that_leans_on_the_one_before_carries_it():
    text = (
        "We considered Debezium reading the write-ahead log. It would give lower latency, but it needs a "
        "replication slot on the primary."
    )
    assert texts(text) == [
        "We considered Debezium reading the write-ahead log.",
        "We considered Debezium reading the write-ahead log. It would give lower latency, but it needs a "
        "replication slot on the primary.",
    ]


def test_a_count_of_things_named_before_carries_the_sentence_that_names_them():
    text = (
        "The Orders team has seven engineers. All seven have run PostgreSQL in production for years. "
        "All requests are retried once."
    )
    assert texts(text) == [
        "The Orders team has seven engineers.",
        "The Orders team has seven engineers. All seven have run PostgreSQL in production for years.",
        "All requests are retried once.",  # a quantifier over a noun it names itself stands alone
    ]


def test_a_sentence_opening_with_a_connective_leans_on_the_one_before():
    text = (
        "Basic authentication can protect the whole site. Alternatively, you can protect the whole site but keep "
        "some areas public. In addition to passwords, access can be limited by address."
    )
    assert texts(text)[1:] == [
        "Basic authentication can protect the whole site. Alternatively, you can protect the whole site but keep "
        "some areas public.",
        "In addition to passwords, access can be limited by address.",  # names what it adds to: stands alone
    ]


def test_a_leaning_sentence_with_nothing_before_it_is_left_out():
    assert texts("However, this only works when the cache is warm enough.\n\nA plain sentence stands alone here.") == [
        "A plain sentence stands alone here."
    ]


def test_a_list_item_keeps_its_lead_in():
    text = (
        "Before raising the pool, check these signals:\n\n"
        "- the time requests wait to borrow a connection;\n"
        "- the number of active connections on the primary\n  compared with max_connections."
    )
    units = units_of(text)
    assert [u.kind for u in units] == ["item", "item"]
    lead_in = "Before raising the pool, check these signals:"
    assert units[0].quotes == [lead_in, "the time requests wait to borrow a connection;"]
    assert units[1].text == (
        "Before raising the pool, check these signals: the number of active connections on the primary compared "
        "with max_connections."
    )


def test_a_table_row_is_quoted_whole_with_its_header_row():
    text = "| Plan | Limit per minute |\n|---|---|\n| Standard | 600 requests |\n| Enterprise | 6,000 requests |"
    units = units_of(text)
    assert [u.kind for u in units] == ["row", "row"]
    assert units[1].text == "| Plan | Limit per minute |\n|---|---|\n| Enterprise | 6,000 requests |"
    assert units[1].quotes == ["| Plan | Limit per minute |", "| Enterprise | 6,000 requests |"]
    assert units[1].matched == "Plan: Enterprise; Limit per minute: 6,000 requests"


def test_code_headings_and_fragments_are_not_units_even_when_a_chunk_cuts_a_block():
    head = "The script below runs atomically in Redis.\n\n```lua\nlocal capacity = tonumber(ARGV[1])\nlocal rate = 1"
    tail = "local tokens = tonumber(state[1]) or capacity\nreturn tokens\n```\n\nNo two requests can spend one token."
    assert texts(head) == ["The script below runs atomically in Redis."]
    assert texts(tail) == ["No two requests can spend one token."]
    assert texts("# A heading line\n\nToo short.\n\nA sentence of enough words stays.") == [
        "A sentence of enough words stays."
    ]


def test_a_sentence_about_the_page_itself_is_not_quoted():
    text = (
        "Server-Sent Events push text frames over plain HTTP. This page explains when to pick which. "
        "In this guide, both are compared. Learn how to run either at scale."
    )
    assert texts(text) == ["Server-Sent Events push text frames over plain HTTP."]


def test_a_leaning_sentence_is_quoted_as_the_two_sentences_it_is_made_of():
    units = units_of("WebSocket and SSE hold a long-lived connection per client. It changes how capacity is planned.")
    assert units[1].quotes == [
        "WebSocket and SSE hold a long-lived connection per client.",
        "It changes how capacity is planned.",
    ]


def test_an_ellipsis_or_an_abbreviation_does_not_end_a_sentence():
    text = (
        "Set the timeout per role with `ALTER ROLE ... SET idle_in_transaction_session_timeout` so it sticks. "
        "Prefer short names, e.g. Orders or Billing, for roles."
    )
    assert texts(text) == [
        "Set the timeout per role with `ALTER ROLE ... SET idle_in_transaction_session_timeout` so it sticks.",
        "Prefer short names, e.g. Orders or Billing, for roles.",
    ]


def test_a_quote_starts_at_its_first_word_not_at_the_markup_before_it():
    text = (
        '<a href="#naming-boolean" name="naming-boolean">:no_entry:</a> **DO NOT** use "is" prefix in names of '
        '`boolean` values, e.g. "enabled" not "isEnabled".\n\n'
        '- <a href="#versioning" name="versioning">:white_check_mark:</a> **DO** version the API from its very '
        "first release.\n\n"
        '<p align="center"> <img src="images/cdn.png"> <br/> <i><a href=https://example.com/cdn>Source: Why use '
        "a CDN at all</a></i> </p>\n\n"
        'We learned this on the <a href="https://example.com/">Example</a> platform over many years.\n'
    )
    shown = [unit.text for unit in units_of(text)]
    assert shown == [
        '**DO NOT** use "is" prefix in names of `boolean` values, e.g. "enabled" not "isEnabled".',
        "**DO** version the API from its very first release.",
        'We learned this on the <a href="https://example.com/">Example</a> platform over many years.',
    ]  # an image with its caption is no sentence; a link inside a sentence stays as written
    assert all(quote in text for unit in units_of(text) for quote in unit.quotes)  # still verbatim


def test_generated_html_is_not_quoted_as_prose():
    text = (
        "<tr> <td> <code>burst</code><br/> <em> int32 </em> </td> <td> <em>(Optional)</em> <p>Burst sets the "
        "maximum number of requests that can exceed the rate.</p> </td> </tr>\n\n"
        "Set `burst` to let short spikes through without rejecting them.\n"
    )
    assert [unit.text for unit in units_of(text)] == ["Set `burst` to let short spikes through without rejecting them."]
