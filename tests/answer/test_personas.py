"""Personas: the shipped agent file, dropping in another one, and errors that name the broken file."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from rag.answer.personas import GROUNDING_RULES, Persona, PersonaError, list_personas, load_persona, parse_persona

AGENTS = Path(__file__).resolve().parents[2] / "agents"
SHIPPED = AGENTS / "backend-architecture-expert.md"

REVIEWER = """\
---
name: security-reviewer
description: Reviews API designs for security problems only.
color: red
---

You review backend designs strictly for security: authentication, authorization, secrets, OWASP API risks.
Be terse.
"""


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture
def agents(tmp_path: Path) -> Path:
    """A copy of the shipped agents folder that a test may add files to."""
    folder = tmp_path / "agents"
    write(folder, SHIPPED.name, SHIPPED.read_text(encoding="utf-8"))
    return folder


def test_the_shipped_persona_parses_and_covers_the_brief():
    persona = parse_persona(SHIPPED)
    assert persona.name == "backend-architecture-expert"
    assert persona.description and persona.color == "blue"
    assert persona.path == SHIPPED
    assert not persona.prompt.startswith("---") and "name:" not in persona.prompt.splitlines()[0]
    prompt = persona.prompt.lower()
    topics = [
        ("microservices",),
        ("rest",),
        ("graphql",),
        ("grpc",),
        ("websocket",),
        ("postgresql",),
        ("mongodb",),
        ("redis",),
        ("cap",),
        ("oauth",),
        ("jwt",),
        ("owasp",),
        ("kubernetes",),
        ("node.js",),
        ("python",),
        ("java",),
        ("go",),
        ("mermaid",),
        ("trade-off", "trade off"),
        ("monitor", "metrics, alerts"),
        ("maintenance", "past launch", "long-term"),
        ("requirement",),
    ]
    for words in topics:
        assert any(word in prompt for word in words), f"the persona does not mention {words[0]}"
    # the grounding rules are appended to every persona's system prompt
    assert persona.system_prompt.startswith(persona.prompt)
    assert persona.system_prompt.endswith(GROUNDING_RULES)
    rules = GROUNDING_RULES.lower()
    assert "cite" in rules and "general knowledge" in rules and "do not cover" in rules


def test_the_default_persona_is_found_by_name():
    assert load_persona("backend-architecture-expert", AGENTS).path == SHIPPED
    assert [p.name for p in list_personas(AGENTS)] == ["backend-architecture-expert"]


def test_a_dropped_in_agent_file_can_be_picked_by_name(agents: Path):
    write(agents, "reviewer.md", REVIEWER)  # the file name need not match the persona name
    names = [p.name for p in list_personas(agents)]
    assert names == ["backend-architecture-expert", "security-reviewer"]
    persona = load_persona("security-reviewer", agents)
    assert isinstance(persona, Persona)
    assert persona.description == "Reviews API designs for security problems only."
    assert persona.color == "red"
    assert persona.prompt.startswith("You review backend designs strictly for security")
    assert persona.system_prompt.endswith(GROUNDING_RULES)


def test_a_persona_can_be_given_as_a_file_path(tmp_path: Path, agents: Path):
    path = write(tmp_path / "elsewhere", "mine.md", REVIEWER)
    assert load_persona(str(path), agents).name == "security-reviewer"


def test_color_is_optional(agents: Path):
    write(agents, "plain.md", "---\nname: plain\ndescription: No colour given.\n---\nAnswer plainly.\n")
    assert load_persona("plain", agents).color  # a default, never empty


def test_a_file_named_after_another_persona_is_not_mistaken_for_it(agents: Path):
    write(agents, "security-reviewer.md", REVIEWER.replace("name: security-reviewer", "name: auditor"))
    assert load_persona("auditor", agents).path.name == "security-reviewer.md"
    with pytest.raises(PersonaError, match="no persona named 'security-reviewer'"):
        load_persona("security-reviewer", agents)


BROKEN = {
    "no front matter": ("You are a helpful architect.\n", "front matter"),
    "unclosed front matter": ("---\nname: x\ndescription: y\nYou are an architect.\n", "front matter"),
    "invalid yaml": ("---\nname: [unclosed\ndescription: y\n---\nBody.\n", "invalid YAML"),
    "front matter not a mapping": ("---\n- just\n- a list\n---\nBody.\n", "front matter"),
    "missing name": ("---\ndescription: Reviews things.\n---\nBody.\n", "missing name"),
    "missing description": ("---\nname: reviewer\n---\nBody.\n", "missing description"),
    "blank name": ("---\nname: '  '\ndescription: Reviews things.\n---\nBody.\n", "missing name"),
    "empty body": ("---\nname: reviewer\ndescription: Reviews things.\n---\n\n   \n", "body"),
    "not utf-8": (b"---\nname: r\ndescription: \xff\xfe\n---\nBody.\n", "cannot read"),
}


@pytest.mark.parametrize("case", BROKEN, ids=list(BROKEN))
def test_an_invalid_agent_file_gives_an_error_naming_the_file(case: str, agents: Path):
    content, reason = BROKEN[case]
    path = agents / "broken-agent.md"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(PersonaError) as caught:
        parse_persona(path)
    message = str(caught.value)
    assert str(path) in message, message
    assert reason.lower() in message.lower(), message
    assert "Traceback" not in message
    # picking any persona from a folder holding a broken file reports that file, not a puzzling KeyError
    with pytest.raises(PersonaError, match="broken-agent.md"):
        list_personas(agents)


def test_an_unknown_persona_lists_the_available_ones(agents: Path):
    write(agents, "reviewer.md", REVIEWER)
    with pytest.raises(PersonaError) as caught:
        load_persona("frontend-guru", agents)
    message = str(caught.value)
    assert "frontend-guru" in message and str(agents) in message
    assert "backend-architecture-expert" in message and "security-reviewer" in message


def test_a_missing_agents_folder_is_named(tmp_path: Path):
    missing = tmp_path / "no-such-agents"
    with pytest.raises(PersonaError, match="no-such-agents"):
        load_persona("backend-architecture-expert", missing)
