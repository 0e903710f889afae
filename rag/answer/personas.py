"""Personas: agent files in ``agents/`` (Claude Code agent format) that give the answerer its voice.

A file is YAML front matter (``name``, ``description``, optional ``color``) followed by a Markdown
body, the system prompt. Any such file dropped into the folder can be picked by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REQUIRED = ("name", "description")

GROUNDING_RULES = """

## Grounding rules (added to every persona)
- Answer from the numbered passages you are given; every claim that rests on a passage is cited.
- If the passages do not cover the question, say so plainly in the first sentence.
- Anything you add from general knowledge is marked as such ("General knowledge, not in the knowledge base: ...").
- Never invent a source, a document name, a team decision or a number.
"""


# what a persona is told when it runs as a Claude Code agent with the MCP tools instead of inside the answerer
KNOWLEDGE_BASE_RULES = """

## The team's knowledge base (MCP server `{server}`)
- Before you answer, search the knowledge base with `search_knowledge`: the team's design docs, ADRs, runbooks
  and postmortems (doc type `team`) and reference articles (doc type `reference`). Search again with other words
  when the first results miss; use `read_document` when a passage is not enough and `list_documents` to see
  what exists.
- Cite the file of every claim you take from it, as `path` (and section) exactly as the tool gave it, e.g.
  (corpus/team/adr-0009-outbox-pattern-for-order-events.md, "Decision").
- A team document outranks general advice. A result whose `status_note` says "superseded by ..." is history:
  find and cite its successor; "stale since ..." means say it may be out of date.
- When the knowledge base does not cover the question (low `confidence`, nothing relevant), say so first, then
  mark anything you add from general knowledge as such. Never invent a document, a decision or a number.
"""
MCP_TOOLS = ("search_knowledge", "read_document", "list_documents", "ask")
READ_ONLY_TOOLS = ("Read", "Grep", "Glob")  # the persona may also read the code it is asked about


class PersonaError(Exception):
    """An agent file that cannot be used; the message names the file and the reason."""


@dataclass(frozen=True)
class Persona:
    name: str
    description: str
    color: str
    prompt: str
    path: Path

    @property
    def system_prompt(self) -> str:
        return self.prompt.rstrip() + GROUNDING_RULES


def parse_persona(path: Path) -> Persona:
    from rag.documents.front_matter import FrontMatterError, split_front_matter

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise PersonaError(f"{path}: cannot read agent file: {error}") from None
    if not text.startswith("---"):
        raise PersonaError(f"{path}: an agent file starts with YAML front matter between '---' lines")
    try:
        meta, body = split_front_matter(text)
    except FrontMatterError as error:
        raise PersonaError(f"{path}: {error}") from None
    missing = [key for key in REQUIRED if not str(meta.get(key) or "").strip()]
    if missing:
        raise PersonaError(f"{path}: front matter is missing {', '.join(missing)}")
    if not body.strip():
        raise PersonaError(f"{path}: the body (the system prompt) is empty")
    return Persona(
        name=str(meta["name"]).strip(),
        description=str(meta["description"]).strip(),
        color=str(meta.get("color") or "blue"),
        prompt=body.strip(),
        path=path,
    )


def list_personas(agents_dir: Path) -> list[Persona]:
    """Every valid persona in the folder (invalid ones raise: a broken file should not go unnoticed)."""
    if not Path(agents_dir).is_dir():
        raise PersonaError(f"{agents_dir}: the agents folder does not exist")
    return [parse_persona(path) for path in sorted(Path(agents_dir).glob("*.md"))]


def load_persona(name_or_path: str, agents_dir: Path) -> Persona:
    candidate = Path(name_or_path)
    if candidate.suffix == ".md" and candidate.is_file():
        return parse_persona(candidate)
    direct = Path(agents_dir) / f"{name_or_path}.md"
    if direct.is_file():
        persona = parse_persona(direct)
        if persona.name == name_or_path:
            return persona
    for persona in list_personas(agents_dir):
        if persona.name == name_or_path:
            return persona
    names = ", ".join(p.name for p in list_personas(agents_dir)) or "none"
    raise PersonaError(f"no persona named '{name_or_path}' in {agents_dir} (available: {names})")


def claude_code_agent(persona: Persona, server: str = "knowledge") -> str:
    """The persona as a Claude Code agent file (``.claude/agents/NAME.md``): its own front matter and prompt,
    with the knowledge base's MCP tools (of the server added as ``server``) granted and the rules to use them."""
    import yaml

    tools = [f"mcp__{server}__{tool}" for tool in MCP_TOOLS] + list(READ_ONLY_TOOLS)
    tool_list = ", ".join(tools)
    front = {"name": persona.name, "description": persona.description, "tools": tool_list, "color": persona.color}
    header = yaml.safe_dump(front, sort_keys=False, allow_unicode=True, width=1_000)
    return f"---\n{header}---\n\n{persona.prompt.rstrip()}{KNOWLEDGE_BASE_RULES.format(server=server)}"
