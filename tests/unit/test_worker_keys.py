"""A worker reads and checks only its own provider's API keys."""

from __future__ import annotations

import logging

import pytest

from edge_workers.worker import _api_keys
from shared.config import load_settings


def test_a_worker_only_cares_about_its_own_providers_key(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    _, models = load_settings({"EDGE_MASTER_KEY": "sk-edge-x"})
    with caplog.at_level(logging.WARNING):
        assert _api_keys(models, "openai") == {"OPENAI_API_KEY": "sk-openai"}
    assert caplog.records == []  # no word about the anthropic key it never uses
    with caplog.at_level(logging.WARNING):
        assert _api_keys(models, "anthropic") == {"ANTHROPIC_API_KEY": ""}
    assert [r.getMessage() for r in caplog.records] == ["no API key in $ANTHROPIC_API_KEY"]
