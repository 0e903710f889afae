"""Question intent: the form, the sides of a comparison, and the named things checked against the docs."""

from __future__ import annotations

import pytest

from rag.search.intent import missing_names, read_intent


@pytest.mark.parametrize(
    ("question", "form"),
    [
        ("What's the difference between a saga and two-phase commit?", "compare"),
        ("Why did we pick Postgres for orders?", "why"),
        ("What is our rate limit on the public API?", "number"),
        ("How do we stop one tenant reading another tenant's rows?", "how"),
        ("How should we rate-limit our public API?", "how"),  # a way to limit, not the limit
        ("How long do we keep idempotency keys?", "number"),
        ("What is a consumer group?", "what"),
    ],
)
def test_the_form_of_a_question(question, form):
    assert read_intent(question).form == form


def test_a_comparison_names_both_sides():
    assert read_intent("What's the difference between a saga and two-phase commit?").sides == [
        "saga",
        "two-phase commit",
    ]
    assert read_intent("Kafka vs RabbitMQ for order events?").sides == ["Kafka", "RabbitMQ"]


def test_specific_names_are_found_and_generic_ones_left_out():
    names = [n.text for n in read_intent("What is our SLO for the returns API?").names]
    assert names == ["returns API"]
    # a hyphenated verb is only a candidate (compound): the answer names it missing only when a word of it is rare
    assert [n for n in read_intent("How should we rate-limit our API?").names if not n.compound] == []
    question = "Why did ADR-0012 change max_poll_records and the DiskFullAlertHigh alert?"
    found = [n.text for n in read_intent(question).names]
    assert set(found) == {"ADR-0012", "max_poll_records", "DiskFullAlertHigh alert"}
    hyphenated = "Can app-wide multi-table reads use permessage-deflate or a Cassandra-style blue-green cutover?"
    assert [n.text for n in read_intent(hyphenated).names if n.compound] == ["permessage-deflate", "blue-green"]
    # a service-shaped name is an identifier, never a common-word compound that needs a rare word
    names = read_intent("Who owns the invoice-service?").names
    assert [(n.text, n.compound) for n in names] == [("invoice-service", False)]
    camel = "How do I set the canaryAnalysis field of a VirtualServer?"
    assert [n.text for n in read_intent(camel).names] == ["canaryAnalysis"]
    # a dotted path of snake_case keys is one name, to its last key: the field asked about is the part that differs
    dotted = "What does outlier_detection.max_ejection_time_jitter add? Compare outlier_detection.interval."
    assert [n.text for n in read_intent(dotted).names] == [
        "outlier_detection.max_ejection_time_jitter", "outlier_detection.interval"
    ]


def test_a_dotted_key_the_passages_lack_is_missing_though_its_first_key_is_there():
    passages = ["Set outlier_detection.consecutive_5xx to eject a host after five gateway errors."]
    question = "Can outlier detection eject a host after client errors, using outlier_detection.consecutive_4xx?"
    assert [n.text for n in missing_names(read_intent(question).names, passages)] == [
        "outlier_detection.consecutive_4xx"
    ]


PASSAGES = [
    "The public API availability SLO is 99.95% of requests per calendar month.",
    "ADR-0007: Orders stay in PostgreSQL. The checkout flow calls the payments service synchronously.",
]


def test_a_name_no_passage_mentions_is_missing():
    def missing(question: str) -> list[str]:
        return [n.text for n in missing_names(read_intent(question).names, PASSAGES)]

    assert missing("What is our SLO for the returns API?") == ["returns API"]
    assert missing("What is our SLO for the public API?") == []
    assert missing("What did ADR-7 decide?") == []  # ADR-0007, numbered either way
    assert missing("What did ADR-0015 decide?") == ["ADR-0015"]
    # worded differently from the docs, still mentioned: one singling-out word anywhere in a passage
    assert missing("Does the checkout service retry?") == []
    # several singling-out words must sit near the head noun
    assert missing("What is the rate limit for the GraphQL merchant API?") == ["GraphQL merchant API"]


def test_strict_mentions_need_the_singling_out_word_next_to_the_head_noun():
    texts = ["The endpoint returns 429 when the bucket is empty; API clients should back off."]
    [name] = read_intent("What is our SLO for the returns API?").names
    assert missing_names([name], texts) == []  # lenient: the word appears in the text
    assert missing_names([name], texts, strict=True) == [name]  # but "returns" is nowhere near "API"
    assert missing_names([name], ["Refunds go through the returns API."], strict=True) == []
    # a verb right after the noun names nothing: "the API returns 429" is no returns API
    assert missing_names([name], ["When the bucket is empty the API returns 429."], strict=True) == [name]


def test_the_form_comes_from_the_sentence_that_asks_not_the_story_before_it():
    question = (
        "We save the order row and then publish to Kafka, and the limit of retries is 3. "
        "Every so often the event never shows up. What's the right way to do this?"
    )
    assert read_intent(question).form == "how"
    assert read_intent("Is it worth starting with microservices for 12 engineers?").form == "how"
    assert read_intent("Traffic spikes exhaust max_connections. Why does that happen?").form == "why"


def test_a_directive_given_an_unknown_destination_is_a_name_of_its_own():
    [name] = read_intent("How do I ship the access log to a broker with access_log kafka: in NGINX Plus?").names
    assert name.text == "access_log kafka:"
    docs = ["Logs can go to a collector: `access_log syslog:server=10.0.0.1 combined;` sends each line over UDP."]
    assert missing_names([name], docs, strict=True) == [name]  # access_log is documented, its kafka: is not
    assert missing_names([name], ["`access_log kafka:broker:9092 json;` ships lines to Kafka."], strict=True) == []


def test_a_question_that_asks_two_things_is_read_as_two_asks():
    assert read_intent("how many partitions does that topic have and how long do we keep the data?").asks == [
        "how many partitions does that topic have",
        "how long do we keep the data?",
    ]
    assert read_intent("what's the max page size on our list endpoints, and what's inside a cursor?").asks == [
        "what's the max page size on our list endpoints",
        "what's inside a cursor?",
    ]
    # "Why, and how do we fix it?" asks one thing about one problem; a plain question asks one thing
    assert read_intent("Our pods keep restarting. Why, and how do we fix it?").asks == []
    assert read_intent("How do we shard and replicate the orders table?").asks == []


def test_names_written_as_english_writes_names_are_found_whole():
    from rag.search.intent import proper_names

    def texts(question: str) -> list[str]:
        return [name.text for name in proper_names(question)]

    assert texts("How do I set up Argo Rollouts to run a canary analysis?") == ["Argo Rollouts"]
    assert texts("What schedule should Velero use? And how does HashiCorp Vault inject secrets?") == [
        "Velero", "HashiCorp Vault"
    ]
    assert texts("WireGuard between pods, or MetalLB?") == ["WireGuard", "MetalLB"]  # an inner capital: even first
    assert texts("How do I write a ksqlDB query?") == ["ksqlDB"]  # an inner capital: even in lower case first
    assert texts("Should our checkout retry twice?") == []  # a sentence's first word is no name by its capital
    assert texts("Is the Billing API slow in the Frankfurt region?") == ["Billing API", "Frankfurt"]
    assert texts("Is the SaaS API slow behind our CDN?") == []  # acronyms alone: shorthand a store may write out
