"""examples/agent.py end to end, as a user runs it: its own loopback remote, the real model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "agent.py"


def test_agent_example_calls_a_tool_feeds_back_its_result_and_answers() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "What is 17 times 23?"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    calls = [i for i, line in enumerate(lines) if " calls calculator(" in line]
    results = [i for i, line in enumerate(lines) if line.startswith("tool calculator -> ")]
    answers = [i for i, line in enumerate(lines) if " answers: " in line]
    # A schema-valid call was made, the tool ran on its arguments, and the loop ended in text.
    assert calls and results and answers, done.stdout
    assert calls[0] < results[0] < answers[-1]
    result = lines[results[0]].removeprefix("tool calculator -> ")
    assert not result.startswith("error"), result
    float(result)  # the calculator's output: a number
