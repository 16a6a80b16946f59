"""Token counts come from the local model's own tokenizer (LangChain's default needs
`transformers`). A remote-only model's estimate is in tests/unit/test_token_counting.py.

The proof of exactness is the model itself: the prompt tokens a local generation reports
(``usage_metadata["input_tokens"]``) equal what `get_num_tokens_from_messages` counted.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.tools import tool

from langchain_disco import DiscoChatModel, LlamaCppEndpoint

pytestmark = pytest.mark.llama

CONVERSATION = [
    SystemMessage("You are terse."),
    HumanMessage("What is the capital of France?"),
    AIMessage("Paris."),
    HumanMessage("And of Italy?"),
]


@tool
def capital(country: str) -> str:
    """The capital city of a country."""
    return "Rome"


def local_model(local: LlamaCppEndpoint, **kw: Any) -> DiscoChatModel:
    params: dict[str, Any] = {"mode": "local", "temperature": 0.0, "max_tokens": 4}
    return DiscoChatModel(local=local, **{**params, **kw})


def test_get_num_tokens_uses_the_local_tokenizer(local_endpoint: LlamaCppEndpoint) -> None:
    model = local_model(local_endpoint)
    text = "Hello world, this is a tokenizer test."
    ids = model.get_token_ids(text)
    assert ids == local_endpoint.tokenize(text)
    assert model.get_num_tokens(text) == len(ids)
    assert 5 < len(ids) < len(text)  # tokens, not characters
    assert model.get_num_tokens("") == 0


def test_the_message_count_is_the_prompt_a_local_generation_reports(
    local_endpoint: LlamaCppEndpoint,
) -> None:
    model = local_model(local_endpoint)
    counted = model.get_num_tokens_from_messages(CONVERSATION)
    answer = model.invoke(CONVERSATION)
    assert answer.usage_metadata is not None
    assert counted == answer.usage_metadata["input_tokens"]


def test_tools_are_counted_as_the_local_model_sees_them(local_endpoint: LlamaCppEndpoint) -> None:
    model = local_model(local_endpoint, max_tokens=24)
    messages = [HumanMessage("Which city is the capital of Italy?")]
    counted = model.get_num_tokens_from_messages(messages, tools=[capital])
    assert counted > model.get_num_tokens_from_messages(messages)
    answer = model.bind_tools([capital], tool_choice="capital").invoke(messages)
    assert answer.usage_metadata is not None
    assert counted == answer.usage_metadata["input_tokens"]


def test_custom_get_token_ids_still_wins(local_endpoint: LlamaCppEndpoint) -> None:
    model = local_model(local_endpoint, custom_get_token_ids=lambda text: [0] * len(text))
    assert model.get_num_tokens("abc") == 3
