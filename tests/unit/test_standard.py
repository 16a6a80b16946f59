"""LangChain's standard unit tests for DiscoChatModel (no model is loaded, no request is made)."""

from __future__ import annotations

from langchain_tests.unit_tests import ChatModelUnitTests

from langchain_disco import DiscoChatModel


class TestDiscoChatModelUnit(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[DiscoChatModel]:
        return DiscoChatModel

    @property
    def chat_model_params(self) -> dict[str, object]:
        return {"mode": "race", "remote_base_url": "http://127.0.0.1:9/v1", "remote_model": "m"}

    @property
    def init_from_env_params(self) -> tuple[dict[str, str], dict[str, object], dict[str, object]]:
        env = {
            "DISCO_MODE": "remote",
            "DISCO_REMOTE_BASE_URL": "http://127.0.0.1:9/v1",
            "DISCO_REMOTE_API_KEY": "sk-from-env",
        }
        return env, {}, {"mode": "remote"}

    @property
    def has_tool_calling(self) -> bool:
        return True

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def has_structured_output(self) -> bool:
        return True

    @property
    def returns_usage_metadata(self) -> bool:
        return True
