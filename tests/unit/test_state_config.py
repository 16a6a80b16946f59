"""DISCO_STATE_URL: a secret, validated, and its password in no error or repr."""

from __future__ import annotations

import pytest

from langchain_disco.config import load_settings
from langchain_disco.errors import ConfigError


def test_a_state_url_that_is_not_redis_is_refused_without_showing_its_password() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(state_url="http://user:hunter2@cache:6379/0")
    message = str(info.value)
    assert "DISCO_STATE_URL" in message and "redis://" in message
    assert "hunter2" not in message
    assert "user:***@cache" in message


def test_a_redis_state_url_is_kept_secret_in_the_settings_repr() -> None:
    settings = load_settings(state_url="redis://:hunter2@cache:6379/0")
    assert settings.state_url is not None
    assert settings.state_url.get_secret_value() == "redis://:hunter2@cache:6379/0"
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings)


def test_the_state_url_reads_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCO_STATE_URL", "rediss://cache:6380/1")
    monkeypatch.setenv("DISCO_STATE_NAMESPACE", "svc")
    settings = load_settings()
    assert settings.state_url is not None
    assert settings.state_url.get_secret_value() == "rediss://cache:6380/1"
    assert settings.state_namespace == "svc"
