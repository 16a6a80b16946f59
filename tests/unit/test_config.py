"""Configuration: env vars, overrides, and errors that name the variable and the fix."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from langchain_disco import ConfigError, DiscoChatModel, DiscoSettings
from langchain_disco.config import load_settings

SECRET = "sk-test-SECRET-0123456789"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("DISCO_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_settings_read_disco_env_vars(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCO_MODE", "remote")
    monkeypatch.setenv("DISCO_REMOTE_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("DISCO_PRICE_IN_PER_MTOK", "1.25")
    s = DiscoSettings()
    assert (s.mode, s.remote_base_url, s.price_in_per_mtok) == (
        "remote",
        "http://127.0.0.1:9/v1",
        1.25,
    )


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("DISCO_REMOTE_MODEL=from-dotenv\n")
    assert DiscoSettings().remote_model == "from-dotenv"


def test_constructor_arguments_override_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCO_MODE", "race")
    monkeypatch.setenv("DISCO_REMOTE_BASE_URL", "http://127.0.0.1:9/v1")
    model = DiscoChatModel(mode="remote", remote_model="other", temperature=0.3, failover=False)
    assert model.mode == "remote"
    assert model.settings.remote_model == "other"
    assert model.temperature == 0.3
    assert model.local is None  # remote mode without failover builds no local endpoint


def test_model_builds_from_environment_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCO_MODE", "remote")
    monkeypatch.setenv("DISCO_REMOTE_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("DISCO_MAX_TOKENS", "77")
    model = DiscoChatModel()
    assert model.remote is not None and model.max_tokens == 77


def test_missing_base_url_names_the_variable_and_the_fix() -> None:
    with pytest.raises(ConfigError) as err:
        DiscoChatModel(mode="race")
    assert "DISCO_REMOTE_BASE_URL" in str(err.value)
    assert "DISCO_MODE=local" in str(err.value)


def test_negative_price_names_the_variable() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(price_in_per_mtok=-1)
    assert "DISCO_PRICE_IN_PER_MTOK=-1" in str(err.value)
    assert "non-negative" in str(err.value)


def test_unknown_mode_from_env_lists_the_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCO_MODE", "fastest")
    with pytest.raises(ConfigError) as err:
        DiscoChatModel()
    message = str(err.value)
    assert "DISCO_MODE='fastest'" in message
    assert "'race'" in message


def test_missing_model_file_is_reported_at_construction(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    with pytest.raises(ConfigError) as err:
        DiscoChatModel(mode="local", local_model_path=missing)
    assert "DISCO_LOCAL_MODEL_PATH" in str(err.value)
    assert str(missing) in str(err.value)


def test_api_key_never_appears_in_repr_errors_or_logs(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("DISCO_REMOTE_API_KEY", SECRET)
    model = DiscoChatModel(mode="remote", remote_base_url="http://127.0.0.1:9/v1")
    assert model.settings.remote_api_key is not None
    assert model.settings.remote_api_key.get_secret_value() == SECRET
    assert SECRET not in repr(model)
    assert SECRET not in str(model.settings)
    assert SECRET not in repr(model.remote)
    assert SECRET not in str(model.model_dump())
    with pytest.raises(ConfigError) as err:
        load_settings(remote_api_key=SECRET, price_out_per_mtok=-5, remote_max_retries="x")
    assert SECRET not in str(err.value)
    assert SECRET not in caplog.text


def test_cached_input_price_is_read_from_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCO_PRICE_CACHED_IN_PER_MTOK", "0.01")
    assert load_settings().price_cached_in_per_mtok == 0.01
    assert load_settings().model_dump()["price_cached_in_per_mtok"] == 0.01


def test_negative_cached_input_price_names_the_variable() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(price_cached_in_per_mtok=-0.5)
    message = str(err.value)
    assert "DISCO_PRICE_CACHED_IN_PER_MTOK=-0.5 (price_cached_in_per_mtok)" in message
    assert "greater than or equal to 0" in message


def test_cached_price_above_the_input_price_names_both_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DISCO_PRICE_CACHED_IN_PER_MTOK", "0.5")
    with pytest.raises(ConfigError) as err:
        load_settings(price_in_per_mtok=0.3)
    message = str(err.value)
    assert "DISCO_PRICE_CACHED_IN_PER_MTOK=0.5 (price_cached_in_per_mtok)" in message
    assert "above the input price DISCO_PRICE_IN_PER_MTOK=0.3" in message
    assert "Fix: set" in message


def test_the_default_cached_price_yields_to_a_lower_input_price() -> None:
    """A self-hosted server priced at 0 keeps working without a cached price of its own."""
    settings = load_settings(price_in_per_mtok=0.0)
    assert settings.price_cached_in_per_mtok == 0.0
    assert load_settings(**settings.model_dump()).price_cached_in_per_mtok == 0.0
    assert load_settings(price_in_per_mtok=0.27).price_cached_in_per_mtok == 0.075


def test_the_cached_input_price_reaches_the_models_cost_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DISCO_PRICE_CACHED_IN_PER_MTOK", "0.01")
    model = DiscoChatModel(mode="remote", remote_base_url="http://127.0.0.1:9/v1", failover=False)
    assert model.scheduler.cost_model.price_cached_in_per_mtok == 0.01
