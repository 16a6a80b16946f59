"""`DiscoChatModel` through LangChain's `dumps`/`loads`: configuration saved, the key kept out.

No model is loaded and no request is made: endpoints are built lazily.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.load import dumpd, dumps, loads

from langchain_disco import DiscoChatModel, DiscoSettings, LlamaCppEndpoint, RemoteOnly

KEY = "sk-test-4f9c2e7d1b"
URL = "http://127.0.0.1:9/v1"


@pytest.fixture(autouse=True)
def _quiet_beta() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is in beta.*")
        yield


def reload(text: str, **kwargs: Any) -> Any:
    return loads(
        text,
        valid_namespaces=["langchain_disco"],
        allowed_objects=[DiscoChatModel],
        **kwargs,
    )


def test_a_model_built_from_settings_round_trips_with_the_key_as_a_secret() -> None:
    model = DiscoChatModel(
        mode="remote",
        remote_base_url=URL,
        remote_model="gpt-4o",
        remote_api_key=KEY,
        failover=False,
        pace_tok_s=15.0,
        temperature=0.2,
        max_tokens=64,
        stop=["\n\n"],
    )
    text = dumps(model)
    loaded = reload(text, secrets_map={"DISCO_REMOTE_API_KEY": KEY})
    assert isinstance(loaded, DiscoChatModel)
    assert loaded.settings == model.settings
    assert loaded.settings.remote_api_key is not None
    assert loaded.settings.remote_api_key.get_secret_value() == KEY
    assert (loaded.temperature, loaded.max_tokens, loaded.stop) == (0.2, 64, ["\n\n"])
    assert loaded.asdict() == model.asdict()


def test_the_key_is_never_in_the_dump_or_the_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCO_REMOTE_API_KEY", KEY + "-env")
    given = {
        "remote_api_key": DiscoChatModel(mode="remote", remote_base_url=URL, remote_api_key=KEY),
        "api_key": DiscoChatModel(mode="remote", remote_base_url=URL, api_key=KEY),
        "environment": DiscoChatModel(mode="remote", remote_base_url=URL),
    }
    for how, model in given.items():
        text = dumps(model)
        assert KEY not in text, how
        assert KEY not in repr(model), how
        assert KEY not in str(dumpd(model)), how
        assert '"id": ["DISCO_REMOTE_API_KEY"]' in text, how


def test_chatopenai_s_api_key_keyword_is_the_remote_s_key_not_a_request_field() -> None:
    model = DiscoChatModel(mode="remote", remote_base_url=URL, api_key=KEY)
    assert model.settings.remote_api_key is not None
    assert model.settings.remote_api_key.get_secret_value() == KEY
    assert "api_key" not in model.model_kwargs


def test_the_key_comes_back_from_the_environment_when_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = dumps(DiscoChatModel(mode="remote", remote_base_url=URL, remote_api_key=KEY))
    monkeypatch.setenv("DISCO_REMOTE_API_KEY", "sk-elsewhere")
    loaded = reload(text, secrets_from_env=True)
    assert loaded.settings.remote_api_key.get_secret_value() == "sk-elsewhere"


def test_every_setting_is_saved_so_the_loading_environment_changes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = DiscoChatModel(mode="race", remote_base_url=URL)  # race: the default mode
    serialized = dumpd(model)
    assert serialized["id"] == ["langchain_disco", "chat_models", "DiscoChatModel"]
    kwargs = serialized["kwargs"]
    secrets = {"remote_api_key", "state_url"}  # unset secrets are not saved: the environment's
    assert set(DiscoSettings.model_fields) - secrets <= set(kwargs)
    assert not {"settings", "local", "remote"} & set(kwargs)  # objects: rebuilt from settings
    assert "lc_versions" not in str(kwargs)  # LangChain's versions are not configuration
    monkeypatch.setenv("DISCO_MODE", "remote")
    monkeypatch.setenv("DISCO_REMOTE_MODEL", "another-model")
    loaded = reload(dumps(model))
    assert loaded.settings == model.settings
    assert loaded.settings.mode == "race"


def test_the_local_model_settings_round_trip() -> None:
    model = DiscoChatModel(mode="local", local_n_ctx=1024, local_rule_based_tool_choice=True)
    loaded = reload(dumps(model))
    assert loaded.settings == model.settings
    assert isinstance(loaded.local, LlamaCppEndpoint)
    assert loaded.local.n_ctx == 1024


@pytest.mark.parametrize("given", ["local", "remote", "policy"])
def test_endpoints_or_policies_passed_as_objects_serialize_as_not_implemented(
    given: str,
) -> None:
    objects: dict[str, Any] = {
        "local": {"local": LlamaCppEndpoint(None, n_ctx=512), "mode": "local"},
        "remote": {"remote": DiscoChatModel(mode="remote", remote_base_url=URL).remote},
        "policy": {"policy": RemoteOnly(), "remote_base_url": URL},
    }
    model = DiscoChatModel(**objects[given])
    serialized = dumpd(model)  # what LangChain's callbacks do on every call: no error
    assert serialized["type"] == "not_implemented"
    with pytest.raises(NotImplementedError, match="doesn't implement serialization"):
        reload(dumps(model))


def test_a_policy_given_by_name_is_configuration() -> None:
    model = DiscoChatModel(policy="remote", remote_base_url=URL)
    assert dumpd(model)["type"] == "constructor"
    assert reload(dumps(model)).settings.policy == "remote"


def test_the_state_url_is_saved_as_a_secret_reference_never_its_password() -> None:
    state_url = "redis://:hunter2@cache:6379/0"
    model = DiscoChatModel(mode="remote", remote_base_url=URL, state_url=state_url)
    text = dumps(model)
    assert "hunter2" not in text and "DISCO_STATE_URL" in text
    loaded = reload(text, secrets_map={"DISCO_STATE_URL": state_url})
    assert loaded.settings.state_url.get_secret_value() == state_url
