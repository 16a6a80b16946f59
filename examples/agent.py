"""A LangChain/LangGraph agent on DiscoChatModel, with two real tools: a calculator and a clock.

Built with `langchain.agents.create_agent` (the current form of LangGraph's ReAct agent).

On the embedded default (no DISCO_REMOTE_BASE_URL) it starts the loopback remote itself and runs
on the small local Gemma model plus that loopback server. A small base model cannot choose
between calling a tool and answering, so both follow a fixed rule there (call a tool unless the
last message is a tool result: `DISCO_LOCAL_RULE_BASED_TOOL_CHOICE`, and the loopback server's
stand-in rule), and grammar-constrained decoding makes every call schema-valid. With a real
provider (DISCO_REMOTE_BASE_URL, DISCO_REMOTE_MODEL, DISCO_REMOTE_API_KEY) the remote model makes
those choices itself and gives sensible answers.

    .venv/bin/python examples/agent.py "What is 17 times 23?"
"""

from __future__ import annotations

import ast
import contextlib
import datetime as dt
import operator
import os
import sys
from typing import Any

from langchain.agents import create_agent
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import tool

from langchain_disco import DiscoChatModel
from langchain_disco.testing import LoopbackServer

_OPERATORS: dict[type, Any] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
}


def _evaluate(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        return float(_OPERATORS[type(node.op)](_evaluate(node.left), _evaluate(node.right)))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPERATORS:
        return float(_OPERATORS[type(node.op)](_evaluate(node.operand)))
    raise ValueError("only numbers and + - * / ** are allowed")


@tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression such as '17 * 23' or '(2 + 3) ** 2'."""
    try:
        return str(_evaluate(ast.parse(expression, mode="eval").body))
    except (ValueError, SyntaxError, ZeroDivisionError) as exc:
        return f"error: {exc}"


@tool
def clock() -> str:
    """The current UTC date and time in ISO format."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def build_model(stack: contextlib.ExitStack) -> DiscoChatModel:
    """DiscoChatModel from DISCO_* variables, or on the embedded default."""
    if os.environ.get("DISCO_REMOTE_BASE_URL"):
        return DiscoChatModel()
    server = stack.enter_context(LoopbackServer(latency_profile="anyscale-7b"))
    return DiscoChatModel(
        mode="race",
        remote_base_url=server.base_url,
        remote_model=server.model_name,
        local_rule_based_tool_choice=True,
        temperature=0.0,
        max_tokens=48,
    )


def run(question: str, stack: contextlib.ExitStack) -> list[Any]:
    agent = create_agent(build_model(stack), [calculator, clock])
    result = agent.invoke({"messages": [("human", question)]}, {"recursion_limit": 6})
    return list(result["messages"])


def main() -> None:
    question = " ".join(sys.argv[1:]) or "What is 17 times 23?"
    with contextlib.ExitStack() as stack:
        for message in run(question, stack):
            if isinstance(message, AIMessage) and message.tool_calls:
                endpoint = message.response_metadata.get("disco_report", {}).get("winner")
                for call in message.tool_calls:
                    print(f"[{endpoint}] calls {call['name']}({call['args']})")
            elif isinstance(message, ToolMessage):
                print(f"tool {message.name} -> {message.content}")
            elif isinstance(message, AIMessage):
                endpoint = message.response_metadata.get("disco_report", {}).get("winner")
                print(f"[{endpoint}] answers: {message.content}")
            else:
                print(f"{message.type}: {message.content}")


if __name__ == "__main__":
    main()
