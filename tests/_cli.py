"""Running the `disco` CLI in-process (typer's CliRunner) and checking how it fails."""

from __future__ import annotations

from typer.testing import CliRunner

from langchain_disco.cli import app

runner = CliRunner()


def invoke(*args: str, input: str | None = None) -> tuple[int, str]:
    """`disco *args` (with `input` on stdin): the exit code and everything printed."""
    result = runner.invoke(app, list(args), input=input)
    return result.exit_code, result.output


def assert_clean_failure(code: int, output: str, *fragments: str) -> None:
    """A non-zero exit with each fragment in the message and no traceback."""
    assert code != 0, output
    assert "Traceback" not in output, output
    flat = " ".join(output.split())  # rich wraps long messages; compare with spaces collapsed
    for fragment in fragments:
        assert fragment in flat, output
