"""ChatOpenAI's conventions, each checked on DiscoChatModel: honoured, or refused aloud.

Runs on the embedded default (the local Gemma and the loopback remote, which records every
request body, so what was sent is checked, not assumed); prints one line per convention and
exits 1 if any fails.

    .venv/bin/python examples/chatopenai_parity.py
"""

from __future__ import annotations

import asyncio
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from langchain_core._api import LangChainBetaWarning
from langchain_core.load import dumps, loads
from langchain_core.tools import tool
from pydantic import BaseModel

from langchain_disco import DiscoChatModel
from langchain_disco.testing import LoopbackServer

KEY = "sk-parity-check-0123456789"
QUESTION = "Name a colour."


class Colour(BaseModel):
    name: str


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return "sunny"


class Parity:
    def __init__(self, server: LoopbackServer) -> None:
        self.server = server
        self.results: list[tuple[str, bool, str]] = []

    def model(self, **kw: Any) -> DiscoChatModel:
        params: dict[str, Any] = {
            "mode": "remote",
            "remote_base_url": self.server.base_url,
            "remote_model": self.server.model_name,
            "temperature": 0.0,
            "max_tokens": 16,
            "persist_profiles": False,
            "remote_continuation": "none",
        }
        return DiscoChatModel(**{**params, **kw})

    def sent(self) -> dict[str, Any]:
        """The body of the last request the remote received."""
        return self.server.requests()[-1]["body"]  # type: ignore[no-any-return]

    def check(self, name: str, run: Callable[[], str | None]) -> None:
        self.server.clear_requests()
        try:
            detail = run() or ""
            self.results.append((name, True, detail))
        except Exception as exc:  # a failed check is reported, the others still run
            self.results.append((name, False, f"{type(exc).__name__}: {exc}"))


def checks(p: Parity) -> None:
    def model_keyword() -> str:
        p.model(remote_model=None, model="gpt-4o").invoke(QUESTION)
        assert p.sent()["model"] == "gpt-4o", p.sent()["model"]
        return "body.model == 'gpt-4o'"

    def misspelled() -> str:
        try:
            p.model(remote_modle="gpt-4o")
        except ValueError as exc:
            (line,) = [x for x in str(exc).splitlines() if "did you mean" in x]
            return line.strip().removeprefix("Value error, ").split(" [type=")[0]
        raise AssertionError("accepted silently")

    def unknown_to_model_kwargs() -> str:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = p.model(user="alice")
        assert any("model_kwargs" in str(w.message) for w in caught), "no warning"
        model.invoke(QUESTION)
        assert p.sent()["user"] == "alice"
        return "warned; body.user == 'alice'"

    def bind_tools_flags() -> str:
        bound = p.model(max_tokens=48).bind_tools(
            [get_weather], tool_choice="get_weather", strict=True, parallel_tool_calls=False
        )
        bound.invoke("Weather in Paris?")
        body = p.sent()
        assert body["parallel_tool_calls"] is False
        assert body["tools"][0]["function"]["strict"] is True
        return "strict and parallel_tool_calls sent"

    def sampling_parameters() -> str:
        p.model(presence_penalty=0.5).invoke(
            QUESTION, frequency_penalty=0.25, logprobs=True, top_logprobs=2, top_p=0.9
        )
        body = p.sent()
        for name, value in (
            ("presence_penalty", 0.5),
            ("frequency_penalty", 0.25),
            ("logprobs", True),
            ("top_logprobs", 2),
            ("top_p", 0.9),
        ):
            assert body[name] == value, (name, body.get(name))
        return "penalties, logprobs, top_p sent"

    def model_kwargs_and_extra_body() -> str:
        p.model(model_kwargs={"user": "bob"}, extra_body={"top_k": 5}).invoke(QUESTION)
        assert (p.sent()["user"], p.sent()["top_k"]) == ("bob", 5)
        return "both in the body"

    def refused(call: Callable[[], object], words: str) -> str:
        try:
            call()
        except ValueError as exc:
            assert words in str(exc), str(exc)
            return str(exc)[:90]
        raise AssertionError("accepted silently")

    def structured(method: str, expect: str) -> Callable[[], str]:
        def run() -> str:
            p.model(max_tokens=32).with_structured_output(Colour, method=method).invoke(  # type: ignore[arg-type]
                "Reply in JSON with a colour name."
            )
            body = p.sent()
            kind = "tools" if "tools" in body else body.get("response_format", {}).get("type", "-")
            assert kind == expect, kind
            return f"sent as {kind}"

        return run

    def response_format_pydantic() -> str:
        message = p.model(max_tokens=32).bind(response_format=Colour).invoke("A colour as JSON.")
        assert p.sent()["response_format"]["type"] == "json_schema"
        return f"parsed: {message.additional_kwargs.get('parsed')!r}"

    def num_tokens() -> str:
        n = p.model(mode="race").get_num_tokens("The quick brown fox")
        assert isinstance(n, int) and n > 0
        return f"{n} tokens (local tokenizer)"

    def serialization() -> str:
        model = p.model(remote_api_key=KEY)
        text = dumps(model)
        assert KEY not in text and KEY not in repr(model)
        again = loads(
            text,
            valid_namespaces=["langchain_disco"],
            allowed_objects=[DiscoChatModel],
            secrets_map={"DISCO_REMOTE_API_KEY": KEY},
        )
        assert again.settings.remote_base_url == model.settings.remote_base_url
        assert again.settings.remote_api_key.get_secret_value() == KEY
        return "round-trips; the key is a secret reference"

    def profile() -> str:
        profile = p.model(mode="race").profile
        assert profile, profile
        return ", ".join(sorted(profile))[:90]

    def metadata() -> str:
        message = p.model().invoke(QUESTION)
        meta, usage = message.response_metadata, message.usage_metadata
        assert meta["id"].startswith("chatcmpl-") and meta["system_fingerprint"]
        assert usage is not None and usage["total_tokens"] > 0
        return f"id, system_fingerprint {meta['system_fingerprint']!r}, usage"

    def custom_events() -> str:
        async def run() -> list[str]:
            return [
                e["name"]
                async for e in p.model().astream_events(QUESTION, version="v2")
                if e["event"] == "on_custom_event"
            ]

        names = asyncio.run(run())
        assert "disco_dispatch" in names, names
        return ", ".join(names)

    def license_file() -> str:
        text = (Path(__file__).resolve().parents[1] / "LICENSE").read_text()
        assert "MIT License" in text
        return "MIT"

    p.check("model= names the remote model", model_keyword)
    p.check("a misspelled keyword is refused", misspelled)
    p.check("an unknown keyword warns, goes to model_kwargs", unknown_to_model_kwargs)
    p.check("bind_tools(strict=, parallel_tool_calls=)", bind_tools_flags)
    p.check("penalties, logprobs, top_logprobs, top_p", sampling_parameters)
    p.check("model_kwargs and extra_body", model_kwargs_and_extra_body)
    p.check("n=2 is refused", lambda: refused(lambda: p.model().invoke(QUESTION, n=2), "n=2"))
    p.check(
        "an unknown call keyword is refused",
        lambda: refused(lambda: p.model().invoke(QUESTION, logit_bais={}), "logit_bais"),
    )
    p.check("with_structured_output json_schema", structured("json_schema", "json_schema"))
    p.check("with_structured_output json_mode", structured("json_mode", "json_object"))
    p.check("with_structured_output function_calling", structured("function_calling", "tools"))
    p.check("bind(response_format=PydanticModel)", response_format_pydantic)
    p.check("get_num_tokens", num_tokens)
    p.check("dumps/loads, key kept out", serialization)
    p.check("profile", profile)
    p.check("response id, system_fingerprint, usage", metadata)
    p.check("custom events in astream_events of the bare model", custom_events)
    p.check("LICENSE", license_file)


def main() -> int:
    warnings.filterwarnings("ignore", category=LangChainBetaWarning)  # `loads` is in beta
    with LoopbackServer(latency_profile="none", seed=0) as server:
        parity = Parity(server)
        checks(parity)
    width = max(len(name) for name, _, _ in parity.results)
    for name, ok, detail in parity.results:
        print(f"{'ok  ' if ok else 'FAIL'} {name:<{width}}  {detail}")
    failed = [name for name, ok, _ in parity.results if not ok]
    print(f"{len(parity.results) - len(failed)} of {len(parity.results)} conventions hold")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
