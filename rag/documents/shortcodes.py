"""Shortcodes: renders the Hugo shortcodes and Jekyll (Liquid) tags of a docs site to the text a reader sees.

A static-site page is Markdown sprinkled with template calls that the site generator expands. Left raw,
``{{< call-out class="note" >}}`` or ``{{% tab name="Helm" %}}`` would be indexed as words and the text of
``{{< include "x.md" >}}`` would be missing. Here admonitions become their text after a bold label
(``**Note:** ...``), tabs and details keep their text under a bold label with their name, includes are
replaced by the included file when it lies under the same root (cycles and deep nesting are cut, and an
``IncludeBudget`` stops a page whose includes multiply its size: each level including the next ten times), links
(``ref``, ``relref``) become their target, and calls with nothing to read (icons, version numbers, remote
code) are dropped or reduced to their visible text (``alt``, ``text``, a link's label). A heading's
anchor attribute (``## Setup {#setup}``) is taken off so that it stays out of section paths.

Hugo calls are parsed with a regex tokenizer and a stack: a call is paired when a closing tag with its name
follows, otherwise it is self-closing; a stray closing tag is dropped. Hugo expands calls inside code blocks
too, so they are rendered everywhere; Jekyll tags are rendered only outside fenced code, where ``{% ... %}``
is more often Jinja or Ansible text than a template call of the page.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

MAX_INCLUDE_DEPTH = 8
MAX_CALL_NESTING = 50  # tabs in tabs in notes: a few levels; fifty is no page's
ADMONITIONS = {
    "note", "notes", "important", "warning", "warn", "tip", "hint", "caution", "danger", "info", "alert",
    "notice", "callout", "call-out", "admonition", "attention", "error", "success", "example", "deprecated",
}  # fmt: skip
LABELLED = {"tab": "name", "details": "summary", "expand": "title", "collapse": "title", "card": "title"}
LINKS = {"ref", "relref"}
VISIBLE_ATTRIBUTES = ("alt", "text", "caption", "label", "title")
BLOCK_START = re.compile(r"\s*(#|[-*+] |\d+[.)] |```|~~~|\||>)")

# Every pattern that reads a page runs in linear time: possessive quantifiers never give back what they took,
# and a call's arguments end at the next opener (``{{`` or ``{%``), so an opener that is never closed costs a
# scan to the next one, not to the end of the page. (``(.*?)\s*/?\s*`` was cubic: 2.5 KB of spaces took 78 s.)
HUGO_TAG = re.compile(r"\{\{([<%])\s*+(/?)\s*+([A-Za-z_][\w-]*+)((?:[^>%{]++|[>%](?!\}\})|\{(?!\{))*+)[>%]\}\}")
ARGUMENT = re.compile(r"""(?:([\w-]+)\s*=\s*)?(?:"((?:[^"\\]|\\.)*)"|`([^`]*)`|'([^']*)'|([^\s"'`=]+))""")
FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})")  # list items indent their fences deeper than 3
JEKYLL_TAG = re.compile(r"(?<!\{)\{%-?+\s*+(\w++)((?:[^%{]++|%(?!\}(?!\}))|\{(?!%))*+)%\}(?!\})")
# "## Setup {#setup}"
HEADING_ATTRIBUTES = re.compile(r"^(#{1,6}[ \t][^\n]*?\S)[ \t]*+\{[#.][^{}\n]*+\}[ \t]*+$", re.MULTILINE)
JEKYLL_BLOCKS = {"raw": "endraw", "comment": "endcomment", "highlight": "endhighlight"}

IncludeReader = Callable[[str, str], "tuple[str, str] | None"]  # (kind, argument) -> (key, text) or None


class ExpansionError(ValueError):
    """A page whose includes would make it too large; the message names the limit."""


@dataclass
class IncludeBudget:
    """How much text a page's includes may add: in all at most ``max_chars`` with the page, and at most
    ``max_expansion`` times the size of the page and the files it includes (each counted once). An included
    file is counted before it is rendered, so a fan-out stops before its text is built."""

    page_chars: int
    max_chars: int
    max_expansion: float
    added: int = 0
    sources: dict[str, int] = field(default_factory=dict)
    source_chars: int = 0

    def spend(self, key: str, text: str) -> None:
        if key not in self.sources:
            self.sources[key] = len(text)
            self.source_chars += len(text)
        self.added += len(text)
        total = self.page_chars + self.added
        if total > self.max_chars:
            raise ExpansionError(
                f"its includes make it over the {self.max_chars / 1048576:.1f} MB limit (RAG_MAX_TEXT_MB)"
            )
        if total > self.max_expansion * (self.page_chars + self.source_chars):
            raise ExpansionError(
                f"its includes make it over {self.max_expansion:g} times the size of the files it is made from "
                "(include fan-out; RAG_MAX_EXPANSION)"
            )


@dataclass
class Call:
    """One shortcode call; ``children`` holds the text between a paired call's tags."""

    name: str
    args: dict[str, str]
    positional: list[str]
    children: list[str | Call] = field(default_factory=list)
    paired: bool = False


def render(
    text: str,
    read_include: IncludeReader | None = None,
    budget: IncludeBudget | None = None,
    _seen: frozenset[str] = frozenset(),
) -> str:
    """``text`` with its Hugo shortcodes and Jekyll tags rendered. ``read_include(kind, argument)`` returns
    the included file's identity and text (``kind`` is "hugo" or "jekyll"), or None when it cannot be read.
    Raises ``ExpansionError`` when the includes go past ``budget``."""
    if "{{" in text:
        text = _render_nodes(_parse(text), _Includes(read_include, budget), _seen)
    if "{%" in text:
        text = _outside_fences(text, lambda prose: _jekyll_prose(prose, _Includes(read_include, budget), _seen))
    if "{" in text:
        text = _outside_fences(text, lambda prose: HEADING_ATTRIBUTES.sub(r"\1", prose))
    return text


def _parse(text: str) -> list[str | Call]:
    root: list[str | Call] = []
    stack: list[tuple[Call, list[str | Call]]] = []  # open calls and the list each was added to

    def current() -> list[str | Call]:
        return stack[-1][0].children if stack else root

    position = 0
    for match in HUGO_TAG.finditer(text):
        current().append(text[position : match.start()])
        position = match.end()
        closing, name = match.group(2) == "/", match.group(3).lower()
        if not closing:
            args, positional = _arguments(_trailing_slash_off(match.group(4)))
            call = Call(name, args, positional)
            current().append(call)
            if len(stack) < MAX_CALL_NESTING:  # deeper calls are read as self-closing (rendering recurses)
                stack.append((call, current()))
            continue
        if not any(open_call.name == name for open_call, _ in stack):
            continue  # a closing tag nothing opened: dropped
        while stack:
            open_call, parent = stack.pop()
            if open_call.name == name:
                open_call.paired = True
                break
            _unpair(open_call, parent)
    current().append(text[position:])
    while stack:
        _unpair(*stack.pop())
    return root


def _trailing_slash_off(source: str) -> str:
    """A call's arguments without the ``/`` of a self-closing call (``{{< icon "x" />}}``)."""
    source = source.rstrip()
    return source[:-1].rstrip() if source.endswith("/") else source


def _unpair(call: Call, parent: list[str | Call]) -> None:
    """A call never closed is self-closing: what was read as its content follows it in its parent."""
    parent.extend(call.children)
    call.children = []


def _arguments(source: str) -> tuple[dict[str, str], list[str]]:
    named: dict[str, str] = {}
    positional: list[str] = []
    for match in ARGUMENT.finditer(source):
        value = next((g for g in match.groups()[1:] if g is not None), "")
        if match.group(1):
            named[match.group(1).lower()] = value
        else:
            positional.append(value)
    return named, positional


@dataclass
class _Includes:
    read: IncludeReader | None
    budget: IncludeBudget | None


def _render_nodes(nodes: list[str | Call], includes: _Includes, seen: frozenset[str]) -> str:
    return "".join(node if isinstance(node, str) else _render_call(node, includes, seen) for node in nodes)


def _render_call(call: Call, includes: _Includes, seen: frozenset[str]) -> str:
    inner = _render_nodes(call.children, includes, seen)
    name = call.name
    if name == "include":
        return _include("hugo", _first(call), includes, seen)
    if name in LINKS:
        return _first(call)
    if name in ADMONITIONS or name.startswith(("call-out", "callout", "admonition")):
        kind = call.args.get("class") or call.args.get("type") or _first(call) or name
        if kind in ("call-out", "callout", "admonition"):
            kind = "note"
        label = call.args.get("title") or kind.replace("-", " ").capitalize()
        return _labelled(label.rstrip(":") + ":", inner) if call.paired else ""
    if name in LABELLED:
        label = call.args.get(LABELLED[name]) or _first(call)
        return _labelled(label, inner, inline=False) if call.paired else label
    if call.paired:
        return inner
    return _visible_text(call)


def _first(call: Call) -> str:
    return call.positional[0] if call.positional else ""


def _labelled(label: str, inner: str, inline: bool = True) -> str:
    """``**label** text``; the label gets a line of its own before a block (a list, code) or when not inline."""
    body = inner.strip("\n")
    if not label:
        return body
    if not body.strip():
        return f"**{label}**"
    separator = "\n\n" if BLOCK_START.match(body) or not inline else " "
    return f"**{label}**{separator}{body.strip() if separator == ' ' else body}"


def _visible_text(call: Call) -> str:
    """What a self-closing call shows a reader: its alt text or label, a link's text, else nothing."""
    for attribute in VISIBLE_ATTRIBUTES:
        if call.args.get(attribute, "").strip():
            return call.args[attribute].strip()
    if call.name == "link" and len(call.positional) > 1:
        return call.positional[1]
    return ""


def _include(kind: str, argument: str, includes: _Includes, seen: frozenset[str]) -> str:
    if not argument or includes.read is None or len(seen) >= MAX_INCLUDE_DEPTH:
        return ""
    found = includes.read(kind, argument)
    if found is None or found[0] in seen:  # missing, outside the root, or a cycle
        return ""
    key, included = found
    if includes.budget is not None:
        includes.budget.spend(key, included)
    return render(included, includes.read, includes.budget, seen | {key}).strip("\n")


def _jekyll_include(kind: str, argument: str, includes: _Includes, seen: frozenset[str]) -> str:
    """``{% include note.html content="..." %}``: an admonition include is its text after a label (its template
    is markup); any other include is the file with its ``{{ include.name }}`` parameters filled in."""
    path, _, rest = argument.partition(" ")
    params, _ = _arguments(rest)
    stem = Path(path).stem.lower()
    text = params.get("content") or params.get("text") or ""
    if stem in ADMONITIONS and text:
        return _labelled(stem.capitalize() + ":", text)
    included = _include(kind, path, includes, seen)
    return re.sub(r"\{\{-?\s*include\.([\w-]+)\s*-?\}\}", lambda m: params.get(m.group(1).lower(), ""), included)


def _outside_fences(text: str, rewrite: Callable[[str], str]) -> str:
    """``rewrite`` applied to each stretch of ``text`` that is not inside a fenced code block."""
    out: list[str] = []
    prose: list[str] = []
    fence = ""
    for line in text.splitlines(keepends=True):
        marker = FENCE.match(line)
        if fence:
            out.append(line)
            if marker and marker.group(1)[0] == fence[0] and len(marker.group(1)) >= len(fence):
                fence = ""
        elif marker:
            out.append(rewrite("".join(prose)))
            prose = []
            out.append(line)
            fence = marker.group(1)
        else:
            prose.append(line)
    out.append(rewrite("".join(prose)))
    return "".join(out)


def _jekyll_prose(text: str, includes: _Includes, seen: frozenset[str]) -> str:
    out: list[str] = []
    position = 0
    while True:
        match = JEKYLL_TAG.search(text, position)
        if match is None:
            out.append(text[position:])
            return "".join(out)
        out.append(text[position : match.start()])
        name, argument = match.group(1).lower(), match.group(2).removesuffix("-").strip()  # "-%}" trims space
        position = match.end()
        if name in JEKYLL_BLOCKS:
            end = re.compile(r"\{%-?\s*" + JEKYLL_BLOCKS[name] + r"\s*-?%\}")
            closing = end.search(text, position)
            body_end, position = (closing.start(), closing.end()) if closing else (len(text), len(text))
            body = text[match.end() : body_end]
            if name == "raw":
                out.append(body)
            elif name == "highlight":
                language = argument.split()[0] if argument else ""
                out.append(f"```{language}\n{body.strip(chr(10))}\n```")
        elif name in ("include", "include_relative"):
            kind = "jekyll" if name == "include" else "jekyll-relative"
            out.append(_jekyll_include(kind, argument, includes, seen))
        elif name in ("link", "post_url"):
            out.append(argument)
        # any other tag (if, for, assign, capture, ...) is template logic: dropped, its content kept


def include_reader(root: Path, page: Path, max_bytes: int) -> IncludeReader:
    """Reads included files for a page under ``root``: Hugo includes from an ``includes/`` folder (Jekyll
    ones from ``_includes/``) in the page's folder or the nearest folder above it, up to the root (a root
    above the site's content folder, such as a repository holding ``docs/includes/``, still finds them),
    then, for Hugo, the root and the page's folder; nothing outside ``root`` or over ``max_bytes`` is read."""
    real_root = root.resolve()
    folders = [folder for folder in (page.parent, *page.parent.parents) if folder.is_relative_to(root)]
    cache: dict[tuple[str, str], tuple[str, str] | None] = {}  # a snippet included many times is read once

    def read(kind: str, argument: str) -> tuple[str, str] | None:
        if (kind, argument) not in cache:
            cache[kind, argument] = find(kind, argument)
        return cache[kind, argument]

    def find(kind: str, argument: str) -> tuple[str, str] | None:
        relative = argument.lstrip("/")
        if kind == "hugo":
            candidates = [folder / "includes" / relative for folder in folders]
            candidates += [real_root / relative, page.parent / argument]
        elif kind == "jekyll":
            candidates = [folder / "_includes" / relative for folder in folders]
        else:
            candidates = [page.parent / argument]
        for candidate in candidates:
            resolved = candidate.resolve()
            if resolved.is_relative_to(real_root) and resolved.is_file():
                try:
                    if resolved.stat().st_size > max_bytes:
                        return None
                    text = resolved.read_text(encoding="utf-8-sig", errors="replace")
                except OSError:
                    return None
                return str(resolved), strip_front_matter(text)
        return None

    return read


def strip_front_matter(text: str) -> str:
    """An included file's own front matter is metadata for the site, not text of the page that includes it."""
    match = re.match(r"---[ \t]*\n.*?\n---[ \t]*(\n|$)", text, re.DOTALL)
    return text[match.end() :] if match else text
