"""A model without a local tokenizer estimates token counts (about 4 characters a token) instead
of raising, as LangChain's GPT-2 fallback did without `transformers`; ids it refuses aloud."""

from __future__ import annotations

import pytest
from langchain_core.messages import HumanMessage
from langchain_core.tools import tool

from langchain_disco import ConfigError, DiscoChatModel


@tool
def capital(country: str) -> str:
    """The capital city of a country."""
    return "Rome"


def test_a_remote_only_model_estimates_four_characters_a_token() -> None:
    model = DiscoChatModel(mode="remote", remote_base_url="http://127.0.0.1:9/v1", failover=False)
    assert model.local is None
    assert model.get_num_tokens("x" * 40) == 10
    assert model.get_num_tokens("") == 0
    messages = [HumanMessage("y" * 80)]
    assert model.get_num_tokens_from_messages(messages) == 20
    with pytest.warns(UserWarning, match="Ignoring tools"):
        assert model.get_num_tokens_from_messages(messages, tools=[capital]) == 20
    with pytest.raises(ConfigError, match="custom_get_token_ids"):
        model.get_token_ids("ids of an unknown tokenizer cannot be estimated")
