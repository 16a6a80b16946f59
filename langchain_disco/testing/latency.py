"""Real hosted-API latency for the loopback server, drawn from measured llmperf samples.

The loopback server stands in for a hosted API, so its delays should look like a hosted API's:
heavy-tailed TTFT and a provider-typical pace. Rather than inventing a distribution, a profile
replays rows of `data/llmperf_providers.csv` (llmperf runs against six providers serving
Llama-2 chat models). One sample is one whole measured row, so a slow TTFT keeps the pace that
came with it. Randomness is injected (`random.Random`), so a seeded run is reproducible.
"""

from __future__ import annotations

import csv
import functools
import random
from dataclasses import dataclass
from importlib import resources

from langchain_disco.errors import ConfigError

NO_LATENCY = "none"
"""The profile name that adds no delay at all (the default for tests)."""

_DATA_FILE = "llmperf_providers.csv"
_MODEL_SIZES = {"llama-2-7b-chat": "7b", "llama-2-13b-chat": "13b", "llama-2-70b-chat": "70b"}


@dataclass(frozen=True)
class LatencySample:
    """One measured request: time to first token and the mean gap between later tokens."""

    ttft_s: float
    inter_token_s: float


@functools.cache
def _measured_samples() -> dict[str, tuple[LatencySample, ...]]:
    """All rows of the bundled CSV, grouped by profile name (`"<provider>-<size>"`)."""
    text = resources.files("langchain_disco").joinpath("data", _DATA_FILE).read_text("utf-8")
    grouped: dict[str, list[LatencySample]] = {}
    for row in csv.DictReader(text.splitlines()):
        size = _MODEL_SIZES.get(row["model"])
        if size is None:
            continue
        name = f"{row['provider']}-{size}"
        sample = LatencySample(float(row["ttft_s"]), float(row["inter_token_latency_s"]))
        grouped.setdefault(name, []).append(sample)
    return {name: tuple(samples) for name, samples in sorted(grouped.items())}


def profile_names() -> list[str]:
    """Every valid profile name: `"none"` first, then `"<provider>-<size>"` sorted."""
    return [NO_LATENCY, *_measured_samples()]


class LatencyProfile:
    """A named pool of measured (TTFT, inter-token gap) pairs, scaled by `scale`.

    `LatencyProfile("together-7b")` replays Together's Llama-2-7B measurements;
    `LatencyProfile("none")` never delays. `scale` multiplies every delay (0.1 makes a
    ten-times faster API with the same shape), which keeps demos and tests short.
    """

    def __init__(self, name: str = NO_LATENCY, *, scale: float = 1.0) -> None:
        if scale < 0:
            raise ConfigError(
                f"latency scale must be >= 0, got {scale}: set --latency-scale to a "
                "non-negative factor (1.0 = as measured)."
            )
        if name == NO_LATENCY:
            samples: tuple[LatencySample, ...] = ()
        else:
            measured = _measured_samples()
            if name not in measured:
                raise ConfigError(
                    f"unknown latency profile {name!r}; valid profiles are: "
                    f"{', '.join(profile_names())}."
                )
            samples = measured[name]
        self.name = name
        self.scale = scale
        self._samples = samples

    @property
    def samples(self) -> tuple[LatencySample, ...]:
        """The measured rows behind this profile, unscaled (empty for `"none"`)."""
        return self._samples

    def sample(self, rng: random.Random) -> tuple[float, float]:
        """Draw one measured request as `(ttft_s, inter_token_s)`, both multiplied by `scale`."""
        if not self._samples:
            return 0.0, 0.0
        row = rng.choice(self._samples)
        return row.ttft_s * self.scale, row.inter_token_s * self.scale

    def __repr__(self) -> str:
        return f"LatencyProfile({self.name!r}, scale={self.scale})"
