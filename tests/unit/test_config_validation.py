"""Bad settings are refused at construction, all together, each naming its variable and fix.

Nothing here needs a model: errors come from the settings themselves (`load_settings`), from
`DiscoChatModel` with `failover=False` in remote mode, or with ready-made echo endpoints.
"""

from __future__ import annotations

import asyncio
import os
import stat
import traceback
import typing
from pathlib import Path

import pytest

from langchain_disco import ConfigError, DiscoChatModel, DiscoSettings
from langchain_disco.config import env_var, load_settings
from langchain_disco.scheduling import DeviceProfile, ServerProfile, _data
from langchain_disco.testing.echo import EchoEndpoint
from tests._faulty import Recording

URL = "http://127.0.0.1:9/v1"
SECRET = "sk-secret-123"


def _error(**overrides: object) -> str:
    with pytest.raises(ConfigError) as err:
        load_settings(**overrides)
    return str(err.value)


def _float_fields() -> list[str]:
    return [
        name
        for name, field in DiscoSettings.model_fields.items()
        if field.annotation is float or float in typing.get_args(field.annotation)
    ]


@pytest.mark.parametrize(
    "url",
    ["not a url", "ftp://example.com/v1", "http:///v1", "http://localhost:abc/v1", "", "api/v1"],
)
def test_base_url_that_is_not_an_http_url_is_refused_at_construction(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("DISCO_REMOTE_BASE_URL", url)
    with pytest.raises(ConfigError) as err:
        DiscoChatModel(mode="remote", failover=False)
    message = str(err.value)
    assert f"DISCO_REMOTE_BASE_URL={url!r}" in message
    assert "not an http:// or https:// URL with a host" in message
    assert "Fix: set OpenAI-compatible base URL" in message


def test_base_url_with_surrounding_whitespace_is_refused() -> None:
    assert "contains whitespace" in _error(remote_base_url=URL + "\n")


@pytest.mark.parametrize(
    "url", [URL, "https://api.openai.com/v1", "http://[::1]:8000/v1", "http://localhost/v1"]
)
def test_http_base_urls_are_accepted_as_given(url: str) -> None:
    assert load_settings(remote_base_url=url).remote_base_url == url


@pytest.mark.parametrize("n_ctx", ["1e26", "100000000000", "8", "0"])
def test_context_size_outside_16_to_1048576_is_refused(
    monkeypatch: pytest.MonkeyPatch, n_ctx: str
) -> None:
    monkeypatch.setenv("DISCO_LOCAL_N_CTX", n_ctx)
    message = _error()
    assert f"DISCO_LOCAL_N_CTX={n_ctx!r}" in message
    assert "an integer from 16 to 1048576" in message


def test_unknown_device_and_server_profiles_are_both_reported_at_construction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DISCO_DEVICE_PROFILE", "Nokia 3310")
    monkeypatch.setenv("DISCO_SERVER_PROFILE", "acme-1b")
    with pytest.raises(ConfigError) as err:
        DiscoChatModel(mode="remote", remote_base_url=URL, failover=False)
    message = str(err.value)
    assert "DISCO_DEVICE_PROFILE='Nokia 3310' (device_profile): unknown device profile" in message
    assert "DISCO_SERVER_PROFILE='acme-1b' (server_profile): unknown server profile" in message
    assert "known: 2-core x86 cloud VM, Galaxy S25" in message
    assert "known: all, anyscale-13b" in message and "together-13b" in message


def test_profile_name_in_the_wrong_case_gets_a_suggestion() -> None:
    assert "did you mean 'Galaxy S25'?" in _error(device_profile="galaxy s25")


def test_every_bundled_profile_name_is_accepted_and_has_a_prior() -> None:
    for device in _data.device_rows():
        assert load_settings(device_profile=device).device_profile == device
        DeviceProfile.prior(device)
    for server in ["all", *_data.server_samples()]:
        assert load_settings(server_profile=server).server_profile == server
        ServerProfile.prior(server)


def test_unknown_policy_name_is_refused_at_construction_with_a_suggestion() -> None:
    message = _error(policy="lenght_threshold")
    assert "DISCO_POLICY='lenght_threshold' (policy): unknown dispatch policy" in message
    assert "did you mean 'length_threshold'?" in message


@pytest.mark.parametrize("pace", ["1e-300", "0.05", "1e6"])
def test_pace_outside_0_1_to_10000_tokens_per_second_is_refused(
    monkeypatch: pytest.MonkeyPatch, pace: str
) -> None:
    monkeypatch.setenv("DISCO_PACE_TOK_S", pace)
    message = _error()
    assert f"DISCO_PACE_TOK_S={pace!r}" in message
    assert "tokens/s from 0.1 to 10000" in message


def test_approximate_continuation_prompt_without_partial_is_refused() -> None:
    message = _error(approximate_continuation_prompt="Please go on.")
    assert "DISCO_APPROXIMATE_CONTINUATION_PROMPT='Please go on.'" in message
    assert "does not contain {partial}" in message
    prompt = "Continue exactly after: {partial}"
    assert load_settings(approximate_continuation_prompt=prompt).approximate_continuation_prompt


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "Infinity"])
def test_inf_and_nan_are_refused_for_every_number_setting(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    fields = _float_fields()
    assert "pace_tok_s" in fields and "remote_idle_timeout_s" in fields and len(fields) >= 10
    for name in fields:
        monkeypatch.setenv(env_var(name), value)
    message = _error()
    for name in fields:
        assert f"{env_var(name)}={value!r} ({name})" in message, name


def test_profile_path_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    message = _error(profile_path=tmp_path)
    assert f"DISCO_PROFILE_PATH={str(tmp_path)!r} (profile_path): is a directory" in message
    assert str(tmp_path / "profiles.json") in message


def test_profile_path_that_is_a_device_or_pipe_is_refused_and_left_alone(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for special in (Path(os.devnull), fifo):
        message = _error(profile_path=special)
        assert f"DISCO_PROFILE_PATH={str(special)!r}" in message
        assert "is not a regular file" in message
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode) and stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_profile_path_under_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    assert "is a file, not a directory" in _error(profile_path=tmp_path / "file" / "p.json")


def test_profile_path_whose_directory_does_not_exist_yet_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "not" / "yet" / "profiles.json"
    assert load_settings(profile_path=path).profile_path == path
    (tmp_path / "p.json").write_text("{}")
    assert load_settings(profile_path=tmp_path / "p.json").profile_path == tmp_path / "p.json"


def test_several_bad_variables_are_reported_together_in_one_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bad = {
        "DISCO_REMOTE_BASE_URL": "localhost:8000",
        "DISCO_LOCAL_N_CTX": "1e26",
        "DISCO_DEVICE_PROFILE": "Nokia 3310",
        "DISCO_SERVER_PROFILE": "acme-1b",
        "DISCO_PACE_TOK_S": "1e-300",
        "DISCO_APPROXIMATE_CONTINUATION_PROMPT": "go on",
        "DISCO_REMOTE_IDLE_TIMEOUT_S": "inf",
        "DISCO_PROFILE_PATH": str(tmp_path),
        "DISCO_POLICY": "fastest",
    }
    for name, value in bad.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as err:
        DiscoChatModel(mode="remote", failover=False)
    lines = str(err.value).splitlines()
    assert lines[0] == "invalid langchain-disco configuration:"
    assert sorted(line.split("=")[0].strip() for line in lines[1:]) == sorted(bad)
    assert all("Fix: set " in line for line in lines[1:])


def test_api_key_never_appears_in_any_error_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCO_REMOTE_API_KEY", SECRET)
    monkeypatch.setenv("DISCO_LOCAL_N_CTX", "1e26")
    monkeypatch.setenv("DISCO_PACE_TOK_S", "inf")
    monkeypatch.setenv("DISCO_DEVICE_PROFILE", "Nokia 3310")
    attempts = [
        lambda: DiscoChatModel(mode="remote", remote_base_url="not a url", failover=False),
        lambda: load_settings(remote_api_key=["sk", SECRET]),  # a key of the wrong type
        lambda: load_settings(remote_base_url=f"https://user:{SECRET}@api.example.com/v1 "),
        lambda: load_settings(remote_base_url=f"https://api.example.com/v1?api-key={SECRET} "),
    ]
    for attempt in attempts:
        with pytest.raises(ConfigError) as err:
            attempt()
        # Nothing chained either: pydantic's own error quotes the inputs.
        assert err.value.__cause__ is None and err.value.__context__ is None
        text = "".join(traceback.format_exception(err.value)) + repr(err.value)
        assert "DISCO_LOCAL_N_CTX='1e26'" in text and "DISCO_PACE_TOK_S='inf'" in text
        assert SECRET not in text, text


def test_empty_message_list_is_refused_before_any_endpoint_starts() -> None:
    local = Recording(EchoEndpoint(tok_s=0))
    remote = Recording(EchoEndpoint(tok_s=0, name="remote", kind="remote"))
    model = DiscoChatModel(mode="race", local=local, remote=remote)

    async def astream_all() -> None:
        async for _ in model.astream([]):
            pass

    calls = {
        "invoke": lambda: model.invoke([]),
        "stream": lambda: list(model.stream([])),
        "ainvoke": lambda: asyncio.run(model.ainvoke([])),
        "astream": lambda: asyncio.run(astream_all()),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match="empty message list: pass a string or at least"):
            call()
        assert local.streams == [] and remote.streams == [], name
    model.invoke("Hi")  # the spies do see a real request
    assert local.streams or remote.streams


def test_policy_that_needs_a_remote_names_the_policy_and_a_fix_that_works() -> None:
    with pytest.raises(ConfigError) as err:
        DiscoChatModel(mode="local", policy="length_threshold")
    message = str(err.value)
    assert message == (
        "DISCO_REMOTE_BASE_URL is not set but DISCO_POLICY=length_threshold chooses per request "
        "between the device and a remote: set DISCO_REMOTE_BASE_URL to an OpenAI-compatible "
        "base URL (https://api.openai.com/v1, or the `disco serve` address), or set "
        "DISCO_POLICY=local."
    )
    assert "DISCO_MODE=local needs a remote" not in message
    assert "or set DISCO_MODE=local" not in message
    # The suggested fix works, whatever DISCO_MODE says (the policy overrides it).
    model = DiscoChatModel(mode="race", policy="local", local=EchoEndpoint(tok_s=0))
    assert model.remote is None and model.invoke("Hi").content


def test_remote_policy_without_a_remote_names_the_policy() -> None:
    with pytest.raises(ConfigError) as err:
        DiscoChatModel(mode="local", policy="remote")
    assert "DISCO_POLICY=remote sends every request to a remote" in str(err.value)
