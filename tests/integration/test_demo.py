"""`disco demo`'s prompts: the embedded base model finishes a sentence, not echo the prompt."""

from __future__ import annotations

import pytest

from langchain_disco import DiscoChatModel, LlamaCppEndpoint
from langchain_disco._demo import PROMPTS, demo_chain


@pytest.mark.llama
@pytest.mark.parametrize(("label", "question"), [p for p in PROMPTS if p[0] in ("short", "medium")])
def test_the_demo_chain_makes_the_base_model_finish_one_sentence(
    local_endpoint: LlamaCppEndpoint, label: str, question: str
) -> None:
    model = DiscoChatModel(mode="local", local=local_endpoint, temperature=0.0, max_tokens=32)
    answer = demo_chain(model).invoke({"question": question})
    # The old prompts came back as the prompt itself, system prompt first, then other scripts'
    # tokens ("Name a colour.で購入").
    assert "concise assistant" not in answer
    assert "\n" not in answer and answer.isascii(), answer
    assert len(answer.split()) >= 5, answer
    assert answer.strip() not in question  # more than a piece of the prompt, echoed
