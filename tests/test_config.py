"""Settings: RAG_* variables, a .env file, command-line overrides, and validation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from rag.cli import main as cli
from rag.config import DEFAULT_MODEL, Settings, load_settings


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No RAG_* variable from the outside, and a working directory without a .env."""
    for name in [name for name in os.environ if name.startswith("RAG_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def test_defaults(clean_env):
    settings = Settings()
    assert settings.data_dir == Path(".rag-data")
    assert settings.collection == "knowledge"
    assert settings.embedding_model == DEFAULT_MODEL
    assert (settings.chunk_tokens, settings.chunk_overlap) == (200, 32)
    assert settings.chroma_host is None and not settings.server_mode
    assert settings.max_file_bytes == 20 * 1024 * 1024


def test_rag_prefixed_environment_variables(clean_env):
    clean_env.setenv("RAG_DATA_DIR", "/srv/rag")
    clean_env.setenv("RAG_COLLECTION", "arch")
    clean_env.setenv("RAG_CHUNK_TOKENS", "150")
    clean_env.setenv("RAG_CHROMA_HOST", "chroma.internal")
    clean_env.setenv("RAG_CHROMA_PORT", "9000")
    clean_env.setenv("RAG_MAX_FILE_MB", "1.5")
    clean_env.setenv("COLLECTION", "not-prefixed-so-ignored")
    settings = Settings()
    assert settings.data_dir == Path("/srv/rag")
    assert settings.collection == "arch"
    assert settings.chunk_tokens == 150
    assert settings.server_mode and (settings.chroma_host, settings.chroma_port) == ("chroma.internal", 9000)
    assert settings.max_file_bytes == int(1.5 * 1024 * 1024)


def test_dotenv_file_is_read_and_environment_wins(clean_env, tmp_path):
    (tmp_path / ".env").write_text("RAG_COLLECTION=from-dotenv\nRAG_CHUNK_OVERLAP=8\nRAG_LOCK_TIMEOUT=3\n")
    settings = Settings()
    assert (settings.collection, settings.chunk_overlap, settings.lock_timeout) == ("from-dotenv", 8, 3.0)
    clean_env.setenv("RAG_COLLECTION", "from-env")
    assert Settings().collection == "from-env"


def test_overrides_beat_environment_and_none_is_ignored(clean_env):
    clean_env.setenv("RAG_COLLECTION", "from-env")
    clean_env.setenv("RAG_CHUNK_TOKENS", "120")
    settings = load_settings(collection="from-flag", chunk_tokens=None, data_dir=Path("/tmp/x"))
    assert settings.collection == "from-flag"
    assert settings.chunk_tokens == 120  # no flag given: the environment stays
    assert settings.data_dir == Path("/tmp/x")


def test_command_line_flags_override_settings(clean_env):
    clean_env.setenv("RAG_DATA_DIR", "/from/env")
    clean_env.setenv("RAG_CHUNK_TOKENS", "120")
    args = cli.build_parser().parse_args(
        [
            "ingest",
            "docs",
            "--data-dir",
            "/from/flag",
            "--chunk-tokens",
            "64",
            "--chroma-host",
            "db",
            "--chroma-port",
            "8123",
            "--collection",
            "c2",
            "--max-file-mb",
            "2",
        ]
    )
    settings = cli._settings(args)
    assert settings.data_dir == Path("/from/flag")
    assert settings.chunk_tokens == 64
    assert (settings.chroma_host, settings.chroma_port, settings.collection) == ("db", 8123, "c2")
    assert settings.max_file_mb == 2.0


@pytest.mark.parametrize(
    "values",
    [{"chunk_tokens": 5}, {"chunk_overlap": -1}, {"max_file_mb": 0}, {"chroma_port": "not-a-port"}],
)
def test_invalid_values_are_rejected(clean_env, values):
    with pytest.raises(ValidationError):
        Settings(**values)
    with pytest.raises(ValidationError):
        Settings().with_overrides(**values)


def test_invalid_environment_value_names_the_variable(clean_env):
    clean_env.setenv("RAG_CHUNK_TOKENS", "lots")
    with pytest.raises(ValidationError, match="chunk_tokens"):
        Settings()


def test_cli_reports_invalid_setting_as_usage_error(clean_env, capsys):
    assert cli.main(["ingest", "docs", "--chunk-tokens", "4"]) == cli.EXIT_USAGE
    assert "invalid setting" in capsys.readouterr().err
    clean_env.setenv("RAG_MAX_FILE_MB", "-3")
    assert cli.main(["stats"]) == cli.EXIT_USAGE
    assert "max_file_mb" in capsys.readouterr().err
