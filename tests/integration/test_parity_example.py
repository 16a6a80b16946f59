"""examples/chatopenai_parity.py, as a user runs it: every ChatOpenAI convention holds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.llama

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "chatopenai_parity.py"


def test_every_convention_of_the_parity_script_holds() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISCO_")}
    result = subprocess.run(
        [sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=600, env=env
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL" not in result.stdout
    last = result.stdout.strip().splitlines()[-1]
    held, _, total = last.split()[:3]
    assert held == total and int(total) >= 18, last
