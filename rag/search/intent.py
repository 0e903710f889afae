"""Question intent: the form of a question, the sides of a comparison, and the specific things it names.

The form (why, how, number, compare, config, what) steers which sentences an offline answer leads with;
the named things (a service, an API, an ADR number, a config key, a product, a version) are checked
against the retrieved passages, so that an answer says plainly when the knowledge base lacks one of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from rag.documents.doc_status import asks_about_past
from rag.text.words import STOPWORDS, identifier_parts, stem

COMPARE = re.compile(
    r"\b(difference|differences|differ|vs\.?|versus|compared?|comparison|better than|rather than|"
    r"trade-?offs? between|choose between|pick between)\b",
    re.IGNORECASE,
)
WHY = re.compile(r"\b(why|reason|reasons|rationale|what made|motivat\w*|justif\w*)\b", re.IGNORECASE)
NUMBER = re.compile(
    r"\b(how (many|much|long|big|large|often|fast|small)|what (is|are|'s) (the|our) "
    r"(limit|limits|size|timeout|default|number|rate|slo|sla|budget|ttl|threshold|target|percentage|cost|latency)|"
    r"slo|sla|uptime|availability|percent\w*|limit|quota)\b",
    re.IGNORECASE,
)
HOW = re.compile(
    r"^\s*(how (do|does|should|can|could|would|to|are|is)|what steps|walk me through|steps to)|"
    r"\b(what'?s the (best |right |usual |better )?(way|fix|design)|what (should|can|could|do) (we|i) (do|change|use)|"
    r"should (we|i)|is it worth|fix|stop|prevent|avoid|keep)\b",
    re.IGNORECASE,
)
HOW_ASKED = re.compile(r"\s*how (do|does|should|can|could|would|to)\b", re.IGNORECASE)
CONFIG = re.compile(
    r"\b(config|configure|configuration|example|code|snippet|yaml|sql|script|command|show me|set up|syntax)\b",
    re.IGNORECASE,
)

# things named by a head noun after a determiner: "the returns API", "our label-printer service"
HEADS = (
    "api|apis|service|services|alert|alerts|runbook|runbooks|dashboard|dashboards|topic|topics|queue|queues|"
    "team|pipeline|cluster|group|pod|pods|vendor|provider|network|embed|widget|job|cron job|feature flag|slo|sla"
)
NAMED = re.compile(rf"\b(?:the|our|each|every)\s+((?:[\w-]+\s){{1,2}})({HEADS})\b", re.IGNORECASE)
ADR = re.compile(r"\bADR[- ]?\d{1,4}\b", re.IGNORECASE)
IDENTIFIER = re.compile(
    r"(?<![\w.-])("
    r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)+(?=[\s,?)]|\.(?:\s|$)|$)"  # dotted.keys, outlier_detection.max_ejection_time
    r"|[a-z][a-z0-9]*(?:_[a-z0-9]+)+"  # snake_case keys
    r"|[A-Z][a-z0-9]+(?:[A-Z][a-z0-9]*){2,}"  # CamelCase alert or type names (three humps or more)
    r"|[a-z]+(?:[A-Z][a-z0-9]+)+"  # camelCase fields: canaryAnalysis, createdAt
    r"|[A-Z]{2,}[-_]?\d+[A-Z0-9]*"  # KIP-848, SEV0
    r"|[a-z][a-z0-9]*(?:-[a-z0-9]+)*-\d[a-z0-9]*"  # eu-central-1
    r"|[xX]-[A-Za-z0-9]+(?:-[A-Za-z0-9]+)+"  # x-request-id headers
    r"|[a-z][a-z0-9]*-(?:service|api|consumer|worker|relay|projector|sender|dlq)"  # invoice-service
    r"|\d{4}-\d{2}-\d{2}"  # a date: "the 2025-12-03 outage"
    r"|(?:GET|POST|PUT|PATCH|DELETE) /[\w/{}.-]+"  # an endpoint
    r")(?![\w-])"
)
# a directive given a scheme-like argument, as config files write a destination: "access_log kafka:", "syslog:"
DIRECTIVE_ARGUMENT = re.compile(r"(?<![\w.-])([a-z][a-z0-9]*(?:_[a-z0-9]+)+ [a-z][a-z0-9]*:)(?=\s|$)")
# a hyphenated term ("permessage-deflate", "blue-green"); one that only describes ("app-wide", "multi-table",
# "Cassandra-style", "force-pushed", "read-then-update") names nothing
COMPOUND = re.compile(r"(?<![\w-])[A-Za-z][a-z0-9]+(?:-[a-z0-9]+)+(?![\w-])")
DESCRIPTIVE_PARTS = frozenset(
    """wide style like based driven aware free friendly safe heavy level bound then and or to by in on
    multi double single triple mid force non pre re self cross semi co sub well high low long short real near
    one two three per all end full time day""".split()
)
VERSION = re.compile(r"\b[A-Z][\w-]* v?\d+(?:\.\d+)+\b")
# "..., and how long do we keep the data?": a second question joined to the first
ASK_JOIN = re.compile(
    r"(?:,\s*|\s)(?:and|or)\s+(?=(?:how|what|which|when|where|why|who|is|are|do|does|did|can|could|should|would|will)\b)",
    re.IGNORECASE,
)
ASK_WORDS = 3
NEAR = 4  # words either side of a head noun where its singling-out words count as naming it
GENERIC = frozenset(
    """our the a an my your their this that which what whose each every new old current same other public
    internal external main primary default existing shared whole single multiple big small large slow fast
    entire first second last next another every""".split()
)


@dataclass(frozen=True)
class Name:
    text: str  # as the question words it
    modifiers: tuple[str, ...] = ()  # for "the returns API": the words that single it out ("returns")
    compound: bool = False  # a hyphenated term: it names something only when one of its words is rare


@dataclass
class Intent:
    form: str  # compare | why | number | how | what
    wants_code: bool
    sides: list[str] = field(default_factory=list)  # the two things a comparison weighs
    names: list[Name] = field(default_factory=list)  # specific things the question names
    asks: list[str] = field(default_factory=list)  # the questions it asks, when it asks more than one
    about_past: bool = False  # it asks how things were ("what did we use before ADR-0011?")


def read_intent(question: str) -> Intent:
    text = question.strip()
    asked = _asked(text)
    sides = comparison_sides(text)
    if sides or COMPARE.search(text):
        form = "compare"
    elif WHY.search(asked):
        form = "why"
    elif HOW_ASKED.match(asked):  # "how should we rate-limit our API?" asks for a way, not a limit
        form = "how"
    elif NUMBER.search(asked):
        form = "number"
    elif HOW.search(asked):
        form = "how"
    else:
        form = "what"
    names = named_things(text)
    return Intent(form, bool(CONFIG.search(text)), sides, names, separate_asks(asked), asks_about_past(text))


def separate_asks(asked: str) -> list[str]:
    """The questions a question asks when it asks several ("how many partitions does it have and how long do
    we keep the data?"); none when it asks one. A part of fewer than ASK_WORDS words ("Why, and how do we fix
    it?") is not a question of its own."""
    parts = [part for part in ASK_JOIN.split(asked) if len(part.split()) >= ASK_WORDS]
    return parts if len(parts) >= 2 else []


def _asked(question: str) -> str:
    """The sentences that ask (those ending in "?"), without the context told before them; the whole text when
    none does ("we scaled to 10 pods. new pods get no traffic. what's wrong?" asks "what's wrong?")."""
    asking = [s for s in re.split(r"(?<=[.!?])\s+", question) if s.rstrip().endswith("?")]
    return " ".join(asking) or question


def comparison_sides(question: str) -> list[str]:
    patterns = [
        r"between (?P<a>.+?) and (?P<b>.+?)(?:[?.,]|$| for | when | in )",
        r"(?P<a>[\w .+#/-]+?)\s+(?:vs\.?|versus)\s+(?P<b>[\w .+#/-]+?)(?:[?.,]|$| for | when | in )",
        r"(?:use|choose|pick|prefer) (?P<a>[\w .+#/-]+?) (?:or|over|instead of|rather than) (?P<b>[\w .+#/-]+?)"
        r"(?:[?.,]|$| for | when | in )",
        r"(?P<a>[\w .+#/-]+?) (?:compared? (?:to|with)) (?P<b>[\w .+#/-]+?)(?:[?.,]|$| for | when | in )",
    ]
    for pattern in patterns:
        match = re.search(pattern, question, flags=re.IGNORECASE)
        if match:
            sides = [_trim(match.group("a")), _trim(match.group("b"))]
            if all(sides):
                return sides
    return []


SIDE_TAILS = frozenset(
    "caching cache pattern patterns approach approaches strategy strategies model models style mode modes "
    "method methods design architecture technique option".split()
)


def _trim(side: str) -> str:
    """A side as its distinguishing words: "a saga" -> "saga", "write-through caching" -> "write-through"."""
    words = [w for w in re.split(r"\s+", side.strip()) if w]
    while words and words[0].lower() in STOPWORDS | GENERIC | {"what's", "whats", "is", "the"}:
        words.pop(0)
    while len(words) > 1 and words[-1].lower() in SIDE_TAILS:
        words.pop()
    return " ".join(words[-4:])


def named_things(question: str) -> list[Name]:
    """The specific things a question names (generic ones such as "our API" or "two services" are left out)."""
    found: list[Name] = []
    for match in NAMED.finditer(question):
        modifiers = [w for w in match.group(1).split() if w.lower() not in STOPWORDS | GENERIC and not w.isdigit()]
        if modifiers:
            found.append(Name(" ".join(modifiers[-2:] + [match.group(2)]), tuple(m.lower() for m in modifiers[-2:])))
    patterns = [(ADR, 0), (IDENTIFIER, 1), (DIRECTIVE_ARGUMENT, 1), (VERSION, 0)]
    for pattern, group in patterns:
        for match in pattern.finditer(question):
            if match.group(group).lower() not in STOPWORDS | GENERIC:
                found.append(Name(match.group(group)))
    for match in COMPOUND.finditer(question):  # after the identifiers: "invoice-service" is one of those
        parts = match.group(0).lower().split("-")
        shaped = any(match.group(0).lower() in name.text.lower() for name in found)
        if not shaped and not DESCRIPTIVE_PARTS & set(parts) and not parts[-1].endswith(("ed", "ing")):
            found.append(Name(match.group(0), compound=True))
    unique: list[Name] = []
    for name in found:
        if not any(name.text.lower() in other.text.lower() for other in unique):
            unique = [other for other in unique if other.text.lower() not in name.text.lower()] + [name]
    return unique


PROPER_WORD = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-'][A-Za-z0-9]+)*")
# a name of acronyms alone ("CDN", "ORM", "SaaS API") is too often shorthand a store writes out, to name a near-miss
# (development sets: 4 answerable questions told "says nothing about" one, 1 near-miss said by one)
ACRONYM = re.compile(r"(?=(?:[a-z]*[A-Z]){2})[A-Za-z]{2,5}")


def proper_names(question: str) -> list[Name]:
    """Products and projects the question names the way English writes names: a run of capitalised words inside a
    sentence ("Argo Rollouts", "HashiCorp Vault", "Velero"), or one word with a capital after its first letter
    anywhere ("WireGuard", "MetalLB", "SPDY"). Whether such a name is one the knowledge base lacks is for the store
    to say (``rag.answer.answering``): "Kubernetes" is a word of some stores and of no others."""
    names: list[Name] = []
    for sentence in re.split(r"(?<=[.!?])\s+", question.strip()):
        run: list[str] = []
        end = -1
        for number, match in enumerate(PROPER_WORD.finditer(sentence)):
            word = match.group(0)
            inner_capital = any(c.isupper() for c in word[1:])
            ordinary = word.lower() in STOPWORDS | GENERIC
            capitalised = (word[0].isupper() and number > 0 or inner_capital) and not ordinary  # ksqlDB too
            if capitalised and run and sentence[end : match.start()] == " ":
                run.append(word)
            else:
                if run:
                    names.append(Name(" ".join(run)))
                run = [word] if capitalised else []
            end = match.end()
        if run:
            names.append(Name(" ".join(run)))
    return [name for name in names if not all(ACRONYM.fullmatch(word) for word in name.text.split())]


def _forms(name: str) -> list[str]:
    """Spellings under which a name counts as mentioned (plural/singular, hyphen or space, ADR numbering)."""
    base = " ".join(name.lower().replace("-", " ").replace("_", " ").split())
    forms = {base, base.rstrip("s")}
    adr = re.fullmatch(r"adr ?(\d+)", base)
    if adr:
        forms = {f"adr {int(adr.group(1)):04d}", f"adr {int(adr.group(1))}"}
    return [form for form in forms if form]


def _normal(text: str) -> str:
    return " ".join(re.sub(r"[-_`*]", " ", text.lower()).split())


def missing_names(names: list[Name], texts: list[str], strict: bool = False) -> list[Name]:
    """The names that no text mentions, whole or as a name the texts' own rule makes (``composed_by_rule``).
    ``strict``: a thing named by a head noun needs its singling-out words next to that noun (for texts found by
    searching those very words, where each will turn up somewhere)."""
    normal_texts = [_normal(text) for text in texts]
    prose_texts = [_normal(re.sub(r"```.*?(?:```|\Z)", " ", text, flags=re.DOTALL)) for text in texts]
    return [
        name
        for name in names
        if not _mentioned(name, normal_texts, prose_texts, strict) and not composed_by_rule(name, texts)
    ]


# a name the question coins from documented parts: one word of letters joined by CamelCase humps, "_" or "-"
COINED = re.compile(r"[A-Za-z]+(?:[_-]?[A-Za-z]+)*")
AFFIX_RULE = (
    r"(?:(?:ends?|ending|starts?|starting|begins?|beginning)\s+(?:with|in)"
    r"|(?:suffix|prefix)(?:es|ed)?(?:\s+(?:with|by|of))?)\s+(?:\S+\s+){{0,2}}?{part}\b"
    r"|\b{part}\s+(?:suffix|prefix)"
)


def composed_by_rule(name: Name, texts: list[str]) -> bool:
    """A method, field or key name the question makes up ("loadOrderAsync") is covered when every one of its
    parts (CamelCase pieces, pieces between "_" and "-", compared by stem) occurs in the texts and one text
    states the rule for its first or last part: "async methods end with Async", "the `is` prefix", a pattern
    such as ``{verb}Async`` or ``List{Resources}``. Without that rule its parts say nothing: documented parts
    also make up the names of directives and alerts that do not exist (``proxy_cache_tags``)."""
    if name.modifiers or not COINED.fullmatch(name.text):
        return False
    parts = identifier_parts(name.text)
    if len(parts) < 2:
        return False
    known = {stem(word) for text in texts for word in identifier_parts(text)}
    if not all(stem(part) in known for part in parts if part not in STOPWORDS):
        return False
    return any(_states_affix(part, text) for part in {parts[0], parts[-1]} for text in texts)


def _states_affix(part: str, text: str) -> bool:
    """The text states a naming rule for ``part``: as a prefix or suffix in words, or in a name pattern."""
    word = re.escape(part)
    if re.search(AFFIX_RULE.format(part=word), _normal(text)):
        return True
    # a placeholder in braces: "{verb}Async", "List{Resources}" (not "*" or "<...>": emphasis and HTML tags)
    return bool(re.search(rf"\{{[a-z]\w*\}}{word}\b|\b{word}\{{[a-z]\w*\}}", text.lower()))


def _mentioned(name: Name, normal_texts: list[str], prose_texts: list[str], strict: bool = False) -> bool:
    """Mentioned when a spelling of the whole name appears; a thing named by a head noun ("the returns API")
    also when its one singling-out word appears in the same text, or its several singling-out words within a
    few words of that head noun (lenient: an answerable question worded differently from the docs must not be
    told they say nothing about it)."""
    if any(form in text for form in _forms(name.text) for text in normal_texts):
        return True
    if name.modifiers:
        head = _forms(name.text.split()[-1])
        wanted = [_forms(modifier) for modifier in name.modifiers]
        for text in prose_texts:  # "returns" in a code sample's `return` names no returns API
            words = text.split()
            bare = {w.strip(".,;:()") for w in words}
            if not strict and len(wanted) == 1 and any(form in bare for form in wanted[0]):
                return True  # one singling-out word ("the checkout API"): anywhere in the same text will do
            for at in (i for i, word in enumerate(words) if word.strip(".,;:()") in head):
                # strict: before the noun, as a name is written ("the returns API"; "the API returns 429" is not)
                near = {w.strip(".,;:()") for w in words[max(0, at - NEAR) : at + (0 if strict else NEAR + 1)]}
                if all(any(form in near for form in forms) for forms in wanted):
                    return True
    return False
