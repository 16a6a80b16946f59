"""`DiscoSettings`: every knob of langchain-disco, from arguments or `DISCO_*` variables.

Constructor arguments win over the environment, which wins over a `.env` file, which wins over
the defaults. Invalid values raise one `ConfigError` naming each offending variable and its fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from langchain_disco.errors import ConfigError

ENV_PREFIX = "DISCO_"


class DiscoSettings(BaseSettings):
    """Configuration of a `DiscoChatModel`. Each field `x` is read from `DISCO_X`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", validate_default=True
    )

    mode: Literal["local", "remote", "race"] = Field(
        "race",
        description="where generation starts: 'local', 'remote', "
        "or 'race' (both, first token wins)",
    )

    policy: str | None = Field(
        None,
        description="a dispatch policy, overriding DISCO_MODE: local, remote, race, random, "
        "random_race, length_threshold, wait_time or generalized",
    )
    budget: float | None = Field(
        None,
        ge=0,
        le=1,
        description="a share between 0 and 1 of the budgeted resource (0: never spend it, "
        "1: race every request); unset uses 0.5 for budgeted policies",
    )
    budget_resource: Literal["server", "device", "unified"] | None = Field(
        None,
        description="what the budget limits: server (USD), device (energy) or unified; unset "
        "uses the policy's own (length_threshold: server, wait_time: device, others: unified)",
    )
    device_profile: str = Field(
        "2-core x86 cloud VM",
        description="the device prior from the bundled measurements, e.g. 'Galaxy S25', "
        "'MacBook Pro M1 Max' or '2-core x86 cloud VM'; replaced as requests are observed",
    )
    server_profile: str = Field(
        "all",
        description="the server TTFT prior, a provider-size such as 'together-13b', or 'all'",
    )
    profile_path: Path | None = Field(
        None,
        description="where learned profiles persist (JSON); unset uses the user cache dir",
    )
    persist_profiles: bool = Field(
        True, description="true to load and save learned latency profiles"
    )

    # -- local (device) ------------------------------------------------------------------
    local_model_path: Path | None = Field(
        None, description="path to a .gguf file; unset uses the embedded Gemma 3 270M"
    )
    local_n_ctx: int = Field(4096, gt=0, description="context size in tokens, e.g. 4096")
    local_n_threads: int | None = Field(
        None, gt=0, description="llama.cpp threads, a positive integer; unset lets llama.cpp pick"
    )
    local_rule_based_tool_choice: bool = Field(
        False,
        description="true lets the local model serve tool_choice='auto' by a fixed rule (call a "
        "tool unless the last message is a tool result); false sends such requests elsewhere",
    )

    # -- remote (server) -----------------------------------------------------------------
    remote_base_url: str | None = Field(
        None,
        description="OpenAI-compatible base URL such as https://api.openai.com/v1 "
        "(or http://127.0.0.1:PORT/v1 for `disco serve`)",
    )
    remote_model: str = Field("gpt-4o-mini", description="the remote model name")
    remote_api_key: SecretStr | None = Field(
        None, description="API key of the remote; never printed"
    )
    remote_continuation: Literal["auto", "none", "vllm", "deepseek", "llamacpp"] = Field(
        "auto",
        description=(
            "how the remote continues a partial answer: auto (probe the server once, in the "
            "background; the official OpenAI and Azure hosts are known to be none), none, "
            "vllm, deepseek or llamacpp"
        ),
    )
    remote_connect_timeout_s: float = Field(5.0, gt=0, description="seconds, a positive number")
    remote_first_token_timeout_s: float = Field(
        60.0, gt=0, description="seconds, a positive number"
    )
    remote_idle_timeout_s: float = Field(30.0, gt=0, description="seconds, a positive number")
    remote_max_retries: int = Field(
        2, ge=0, le=10, description="retries before the first token, 0 to 10"
    )

    # -- cost model (DESIGN section 2) ---------------------------------------------------
    price_in_per_mtok: float = Field(
        0.15, ge=0, description="USD per 1M input tokens, a non-negative number"
    )
    price_out_per_mtok: float = Field(
        0.60, ge=0, description="USD per 1M output tokens, a non-negative number"
    )
    device_energy_prefill_j_per_token: float = Field(
        0.01, ge=0, description="joules per prompt token on the device, a non-negative number"
    )
    device_energy_decode_j_per_token: float = Field(
        0.1, ge=0, description="joules per generated token on the device, a non-negative number"
    )
    usd_per_j: float = Field(
        0.15 / 3.6e6, ge=0, description="exchange rate, USD per joule of device energy"
    )

    # -- delivery, migration and failover (DESIGN section 4) ----------------------------
    pace_tok_s: float | None = Field(
        None,
        gt=0,
        description="a delivery pace in tokens/s (e.g. 15, a reading rate); unset delivers "
        "text as fast as it is generated",
    )
    migration: Literal["off", "cost"] = Field(
        "off",
        description="'cost' moves the rest of an answer to the cheaper endpoint mid-stream, "
        "'off' never migrates on purpose",
    )
    failover: bool = Field(
        True, description="true to continue on the other endpoint when the active one fails"
    )
    stall_floor_s: float = Field(
        2.0, gt=0, description="seconds; the shortest silence mid-stream treated as a stall"
    )
    approximate_continuation_prompt: str | None = Field(
        None,
        description="a prompt containing {partial}; lets failover reach an endpoint that cannot "
        "continue exactly (flagged as approximate in the report); unset disables it",
    )

    # -- generation defaults -------------------------------------------------------------
    max_tokens: int | None = Field(512, gt=0, description="answer length cap, a positive integer")
    temperature: float | None = Field(None, ge=0, le=2, description="between 0 and 2")
    seed: int | None = Field(None, description="an integer seed for sampling")


def env_var(field_name: str) -> str:
    """The environment variable that sets `field_name`."""
    return ENV_PREFIX + field_name.upper()


def load_settings(**overrides: Any) -> DiscoSettings:
    """Settings from `overrides` + environment; validation errors become one `ConfigError`."""
    try:
        return DiscoSettings(**overrides)
    except ValidationError as exc:
        raise config_error_from(exc) from None


def config_error_from(exc: ValidationError) -> ConfigError:
    """One readable error naming each bad variable, what was wrong and what to set instead."""
    lines = []
    for err in exc.errors():
        field = str(err["loc"][0]) if err["loc"] else "?"
        info = DiscoSettings.model_fields.get(field)
        hint = info.description if info is not None and info.description else "see the docs"
        value = err.get("input")
        shown = "***" if "key" in field else repr(value)
        lines.append(f"{env_var(field)}={shown} ({field}): {err['msg']}. Fix: set {hint}.")
    return ConfigError("invalid langchain-disco configuration:\n  " + "\n  ".join(lines))
