"""A streaming LangChain chain over DiscoChatModel, configured from DISCO_* variables.

With no configuration it starts the loopback remote itself (the embedded default); set
DISCO_REMOTE_BASE_URL (and DISCO_REMOTE_MODEL, DISCO_REMOTE_API_KEY) to use a real provider.

    .venv/bin/python examples/chain.py "Why is the sea salty?"
"""

from __future__ import annotations

import contextlib
import os
import sys

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from langchain_disco import DiscoChatModel
from langchain_disco.testing import LoopbackServer


def main(question: str) -> None:
    with contextlib.ExitStack() as stack:
        overrides: dict[str, object] = {}
        if not os.environ.get("DISCO_REMOTE_BASE_URL"):
            server = stack.enter_context(LoopbackServer(latency_profile="anyscale-7b"))
            overrides = {"remote_base_url": server.base_url, "remote_model": server.model_name}
        model = DiscoChatModel(max_tokens=64, **overrides)
        prompt = ChatPromptTemplate.from_messages(
            [("system", "You are a concise assistant."), ("human", "{question}")]
        )
        chain = prompt | model | StrOutputParser()
        for text in chain.stream({"question": question}):
            print(text, end="", flush=True)
        print()
        # The report rides on the model's last chunk; ask for it directly here.
        report = model.invoke(question).response_metadata["disco_report"]
        print(f"winner: {report['winner']}, TTFT {report['ttft_s']:.3f} s, cost {report['cost']}")


if __name__ == "__main__":
    main(" ".join(sys.argv[1:]) or "Name three rivers.")
