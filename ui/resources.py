"""What the UI loads once per process (``st.cache_resource``): settings, the embedding model, the
retriever (store + keyword index) and the answerer; and the personas, read fresh on every run.

Each cached object is keyed by the configuration it was built from (the ``RAG_*`` environment, the
``.env`` file, which Claude key and address), so a changed configuration gets new objects while the
embedding model itself is loaded only once per model name.
"""

from __future__ import annotations

import gc
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from rag.answer.answering import Answerer, choose_provider
from rag.answer.personas import Persona, PersonaError, parse_persona
from rag.config import Settings, load_settings
from rag.index.embedding import Embedder
from rag.search.retrieval import Retriever

OFFLINE_NOTICE = "offline extractive mode: set ANTHROPIC_API_KEY for written answers"


def _fingerprint() -> str:
    """Everything the settings and the provider choice are read from (the key itself only as a hash)."""
    parts = sorted(f"{key}={value}" for key, value in os.environ.items() if key.startswith("RAG_"))
    parts.append(f"cwd={os.getcwd()}")  # relative paths (the default .rag-data, agents/) resolve against it
    env_file = Path(".env")
    if env_file.is_file():
        parts.append(f".env@{env_file.stat().st_mtime_ns}")
    api_key = os.environ.get("ANTHROPIC_API_KEY", "")
    parts.append("key=" + (hashlib.sha256(api_key.encode()).hexdigest() if api_key else ""))
    parts.append("base=" + os.environ.get("ANTHROPIC_BASE_URL", ""))
    return "\n".join(parts)


@st.cache_resource(show_spinner=False)
def _settings(fingerprint: str) -> Settings:
    return load_settings()


def get_settings() -> Settings:
    return _settings(_fingerprint())


@st.cache_resource(show_spinner="Loading the embedding model (once per process)...")
def get_embedder(model_name: str, batch_size: int, backend: str, cache_dir: str) -> Embedder:
    embedder = Embedder(model_name, batch_size, backend, Path(cache_dir))
    embedder.embed_query("warm up")  # load the weights now, not on the first question
    return embedder


@st.cache_resource(show_spinner="Opening the knowledge base...")
def _retriever(fingerprint: str, _settings: Settings) -> Retriever:
    embedder = get_embedder(
        _settings.embedding_model,
        _settings.embed_batch_size,
        _settings.embedding_backend,
        str(_settings.model_cache_dir),
    )
    return Retriever(_settings, embedder=embedder)


def get_retriever(settings: Settings) -> Retriever:
    return _retriever(_fingerprint(), settings)


@st.cache_resource(show_spinner=False)
def _answerer(fingerprint: str, _settings: Settings, _retriever: Retriever) -> Answerer:
    answerer = Answerer(_settings, _retriever, choose_provider(_settings, _retriever))
    # The model, the store client and their libraries are millions of long-lived objects: frozen, the garbage
    # collector stops walking them on every full collection (pauses of a few hundred ms after a click).
    gc.collect()
    gc.freeze()
    return answerer


def get_answerer(settings: Settings, retriever: Retriever) -> Answerer:
    return _answerer(_fingerprint(), settings, retriever)


PROVIDER_NAMES = {"claude": "Claude", "openai-compatible": "local LLM"}


def answerer_label(answerer: Answerer) -> tuple[bool, str]:
    """``(writes answers, text)`` for the sidebar: any model provider by its name and model, or the offline
    extractive answerer's notice."""
    provider = answerer.provider
    if provider.name == "extractive":
        return False, OFFLINE_NOTICE
    name = PROVIDER_NAMES.get(provider.name, provider.name)
    model = getattr(provider, "model", "")
    return True, f"{name} · {model}" if model else name


@dataclass
class PersonaChoice:
    personas: list[Persona]
    errors: list[str]  # one readable message per agent file that cannot be used


def read_personas(agents_dir: Path) -> PersonaChoice:
    """Every usable persona of the folder; a broken file is reported by name but does not hide the others."""
    folder = Path(agents_dir)
    if not folder.is_dir():
        return PersonaChoice([], [f"{folder}: the agents folder does not exist (RAG_AGENTS_DIR)"])
    personas, errors = [], []
    for path in sorted(folder.glob("*.md")):
        try:
            personas.append(parse_persona(path))
        except PersonaError as error:
            errors.append(str(error))
    return PersonaChoice(personas, errors)
