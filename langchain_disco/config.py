"""`DiscoSettings`: every knob of langchain-disco, from arguments or `DISCO_*` variables.

Constructor arguments win over the environment, which wins over a `.env` file, which wins over
the defaults. Invalid values raise one `ConfigError` naming each offending variable and its fix:
everything is checked at construction (numbers are finite, names exist in the bundled data, the
base URL is an http(s) URL), so a bad setting never surfaces later as an unexplained failure.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path, PurePath
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict

from langchain_disco.errors import ConfigError
from langchain_disco.scheduling import _data
from langchain_disco.scheduling.policies import POLICY_NAMES

ENV_PREFIX = "DISCO_"


class DiscoSettings(BaseSettings):
    """Configuration of a `DiscoChatModel`. Each field `x` is read from `DISCO_X`."""

    # `allow_inf_nan=False`: `inf` or `nan` in any number (a timeout, a price, a pace) would
    # reach the scheduler's arithmetic and fail or hang far from the setting that caused it.
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        extra="ignore",
        validate_default=True,
        allow_inf_nan=False,
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
    state_url: SecretStr | None = Field(
        None,
        description="a redis:// (or rediss://, unix://) URL of the store a fleet of workers "
        "shares its budget ledger through; unset keeps it in this process",
    )
    state_namespace: str = Field(
        "disco",
        min_length=1,
        description="the prefix of every key in the shared store: one per service (budget "
        "and learned profiles)",
    )
    device_id: str | None = Field(
        None,
        min_length=1,
        description="which device's learned line this worker shares through DISCO_STATE_URL: "
        "one per machine and local model; unset uses the host name",
    )

    # -- local (device) ------------------------------------------------------------------
    local_model_path: Path | None = Field(
        None, description="path to a .gguf file; unset uses the embedded Gemma 3 270M"
    )
    # 16 tokens hold no chat template and a prompt; past 2**20 (about a million) the KV cache
    # alone outgrows the devices we target. Outside that range a value is a typo (1e26).
    local_n_ctx: int = Field(
        4096,
        ge=16,
        le=1_048_576,
        description="context size in tokens, an integer from 16 to 1048576, e.g. 4096",
    )
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
    remote_header_timeout_s: float = Field(
        15.0, gt=0, description="seconds to wait for the response headers, a positive number"
    )
    remote_max_retry_after_s: float = Field(
        10.0, ge=0, description="longest Retry-After honoured, seconds, 0 or more"
    )
    remote_max_retries: int = Field(
        2, ge=0, le=10, description="retries before the first token, 0 to 10"
    )

    # -- cost model (docs/concepts.md, Budget) -------------------------------------------
    price_in_per_mtok: float = Field(
        0.15, ge=0, description="USD per 1M input tokens, a non-negative number"
    )
    price_out_per_mtok: float = Field(
        0.60, ge=0, description="USD per 1M output tokens, a non-negative number"
    )
    price_cached_in_per_mtok: float = Field(
        0.075,
        ge=0,
        description="USD per 1M input tokens the provider read from its prompt cache, a "
        "non-negative number no larger than DISCO_PRICE_IN_PER_MTOK",
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

    # -- delivery, migration and failover (docs/concepts.md, Migration, Failover) -------
    pace_tok_s: float | None = Field(
        None,
        ge=0.1,
        le=10_000,
        description="a delivery pace in tokens/s from 0.1 to 10000 (e.g. 15, a reading rate; "
        "below 0.1 a 512-token answer takes over an hour and looks hung, above 10000 nobody "
        "reads and it is no pacing at all); unset delivers text as fast as it is generated",
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

    # -- checks pydantic's types cannot express; each message completes "VAR=value: ..." -----

    @field_validator("policy")
    @classmethod
    def _known_policy(cls, name: str | None) -> str | None:
        if name is not None and name not in POLICY_NAMES:
            raise ValueError(f"unknown dispatch policy{_did_you_mean(name, POLICY_NAMES)}")
        return name

    @field_validator("device_profile")
    @classmethod
    def _known_device(cls, name: str) -> str:
        known = sorted(_data.device_rows())
        if name not in known:
            raise ValueError(
                f"unknown device profile{_did_you_mean(name, known)}; known: {', '.join(known)}"
            )
        return name

    @field_validator("server_profile")
    @classmethod
    def _known_server(cls, name: str) -> str:
        known = ["all", *sorted(_data.server_samples())]
        if name not in known:
            raise ValueError(
                f"unknown server profile{_did_you_mean(name, known)}; known: {', '.join(known)}"
            )
        return name

    @field_validator("profile_path")
    @classmethod
    def _writable_file_path(cls, path: Path | None) -> Path | None:
        """Refuse what saving (write a temporary file, rename it over `path`) would destroy."""
        if path is None:
            return None
        try:
            if path.is_dir():
                raise ValueError(
                    f"is a directory; name a file in it, e.g. {path / 'profiles.json'}"
                )
            if path.exists() and not path.is_file():
                raise ValueError(
                    "is not a regular file (a device, pipe or socket), which saving would replace"
                )
            # The missing directories are created on save; an existing non-directory cannot be.
            parent = next((p for p in path.parents if p.exists()), None)
        except OSError:
            return path  # cannot look (permissions): the store warns when it cannot read or save
        if parent is not None and not parent.is_dir():
            raise ValueError(f"{parent} is a file, not a directory")
        return path

    @field_validator("state_url")
    @classmethod
    def _redis_url(cls, url: SecretStr | None) -> SecretStr | None:
        if url is None:
            return None
        scheme = url.get_secret_value().split("://", 1)[0].lower()
        if scheme not in ("redis", "rediss", "unix"):  # the message never echoes the URL
            raise ValueError("not a redis://, rediss:// or unix:// URL")
        return url

    @field_validator("remote_base_url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        if not _is_http_url(url):
            raise ValueError("not an http:// or https:// URL with a host")
        if any(c.isspace() for c in url):
            raise ValueError("contains whitespace, which no URL has")
        return url

    @model_validator(mode="after")
    def _cached_price_at_most_input_price(self) -> DiscoSettings:
        """A provider's cache never costs more than sending the prompt: a cached price above
        the input price is a mistake when set, and the default yields to an input price set
        below it (0 for a self-hosted server, which then bills cached input at 0 too)."""
        if self.price_cached_in_per_mtok <= self.price_in_per_mtok:
            return self
        if "price_cached_in_per_mtok" not in self.model_fields_set:
            # Straight into __dict__: the default yielding is not the user setting a value.
            self.__dict__["price_cached_in_per_mtok"] = self.price_in_per_mtok
            return self
        raise PydanticCustomError(
            "cached_price_above_input_price",
            "above the input price {in_var}={price_in} (price_in_per_mtok); prompt caching "
            "discounts input, so a cached token cannot cost more than an uncached one",
            {
                "field": "price_cached_in_per_mtok",
                "value": self.price_cached_in_per_mtok,
                "in_var": env_var("price_in_per_mtok"),
                "price_in": self.price_in_per_mtok,
            },
        )

    @field_validator("approximate_continuation_prompt")
    @classmethod
    def _has_partial(cls, prompt: str | None) -> str | None:
        if prompt is not None and "{partial}" not in prompt:
            raise ValueError("does not contain {partial}, where the answer so far is put")
        return prompt


def _is_http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        _ = parts.port  # a port that is not a number in range raises ValueError
    except ValueError:  # also a bracketed host that is not an IPv6 address
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _did_you_mean(name: str, known: Sequence[str]) -> str:
    """A suggestion for a typo or a wrong case, else nothing (a wrong guess misleads)."""
    close = [k for k in known if k.lower() == name.lower()]
    close = close or difflib.get_close_matches(name, known, n=1, cutoff=0.8)
    return f" (did you mean {close[0]!r}?)" if close else ""


def env_var(field_name: str) -> str:
    """The environment variable that sets `field_name`."""
    return ENV_PREFIX + field_name.upper()


def load_settings(**overrides: Any) -> DiscoSettings:
    """Settings from `overrides` + environment; validation errors become one `ConfigError`."""
    try:
        return DiscoSettings(**overrides)
    except ValidationError as exc:
        error = config_error_from(exc)
    # Raised outside the `except`: pydantic's error quotes every input (a key of the wrong type,
    # a URL with a password), so it must not ride along as the `__context__` either.
    raise error


def config_error_from(exc: ValidationError) -> ConfigError:
    """One readable error naming each bad variable, what was wrong and what to set instead."""
    lines = []
    for err in exc.errors():
        # A check across fields has no location; its context names the field it blames.
        ctx = err.get("ctx") or {}
        field = str(err["loc"][0]) if err["loc"] else str(ctx.get("field", "?"))
        info = DiscoSettings.model_fields.get(field)
        hint = info.description if info is not None and info.description else "see the docs"
        shown = _shown(field, ctx["value"] if "value" in ctx else err.get("input"))
        msg = err["msg"].removeprefix("Value error, ")  # our validators' own sentences
        lines.append(f"{env_var(field)}={shown} ({field}): {msg}. Fix: set {hint}.")
    return ConfigError("invalid langchain-disco configuration:\n  " + "\n  ".join(lines))


def _shown(field: str, value: object) -> str:
    """The bad value as a reader can check it, secrets masked (the key; a URL's password and
    query, where keys are sometimes put)."""
    if "key" in field:
        return "***"
    if isinstance(value, PurePath):
        value = str(value)
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if field in ("remote_base_url", "state_url") and isinstance(value, str):
        try:
            parts = urlsplit(value)
            if parts.password is not None:
                user, _, host = parts.netloc.rpartition("@")
                parts = parts._replace(netloc=f"{user.partition(':')[0]}:***@{host}")
            if parts.query:
                parts = parts._replace(query="***")
            value = parts.geturl()
        except ValueError:
            return "***"
    return repr(value)
