"""Readers for the real measurements bundled in `langchain_disco/data` (priors and simulator).

Reading package data is the only I/O in `scheduling/`; it happens once per process (cached) and
never touches the clock or the network.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from importlib import resources

_MODEL_SIZES = {"llama-2-7b-chat": "7b", "llama-2-13b-chat": "13b", "llama-2-70b-chat": "70b"}


def _rows(name: str) -> list[dict[str, str]]:
    text = resources.files("langchain_disco").joinpath("data", name).read_text("utf-8")
    return list(csv.DictReader(text.splitlines()))


@dataclass(frozen=True)
class ServerSample:
    """One measured hosted-API request (llmperf): TTFT and the mean gap between later tokens."""

    ttft_s: float
    inter_token_s: float


@functools.cache
def server_samples() -> dict[str, tuple[ServerSample, ...]]:
    """Measured requests per provider-size name (`"together-13b"`), as the loopback server."""
    grouped: dict[str, list[ServerSample]] = {}
    for row in _rows("llmperf_providers.csv"):
        size = _MODEL_SIZES.get(row["model"])
        if size is None:
            continue
        sample = ServerSample(float(row["ttft_s"]), float(row["inter_token_latency_s"]))
        grouped.setdefault(f"{row['provider']}-{size}", []).append(sample)
    return {name: tuple(samples) for name, samples in sorted(grouped.items())}


@dataclass(frozen=True)
class DeviceRow:
    """One row of `device_speeds.csv`; missing figures are `None`."""

    device: str
    prompt_tokens: int | None
    ttft_s: float | None
    decode_tok_s: float | None
    prefill_tok_s: float | None


def _opt(value: str) -> float | None:
    return float(value) if value.strip() else None


@functools.cache
def device_rows() -> dict[str, tuple[DeviceRow, ...]]:
    """Measured on-device speeds per device name (`"Galaxy S25"`, `"MacBook Pro M1 Max"`, ...)."""
    grouped: dict[str, list[DeviceRow]] = {}
    for row in _rows("device_speeds.csv"):
        prompt = _opt(row["prompt_tokens"])
        ttft_ms = _opt(row["ttft_ms"])
        parsed = DeviceRow(
            device=row["device"],
            prompt_tokens=int(prompt) if prompt is not None else None,
            ttft_s=ttft_ms / 1000.0 if ttft_ms is not None else None,
            decode_tok_s=_opt(row["decode_tok_s"]),
            prefill_tok_s=_opt(row["prefill_tok_s"]),
        )
        grouped.setdefault(parsed.device, []).append(parsed)
    return {name: tuple(rows) for name, rows in grouped.items()}


@functools.cache
def azure_conv_lengths() -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Prompt and output token counts of the bundled Azure 2023 conversation trace."""
    prompts: list[int] = []
    outputs: list[int] = []
    for row in _rows("azure_llm_2023_conv.csv"):
        prompts.append(int(row["ContextTokens"]))
        outputs.append(int(row["GeneratedTokens"]))
    return tuple(prompts), tuple(outputs)
