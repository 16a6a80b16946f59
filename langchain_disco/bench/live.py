"""`disco bench live`: the simulator checked against the real thing, on the same requests.

The live run: N requests of a trace (prompt lengths scaled by one factor so the longest fits
the local model, answers capped) go through `DiscoChatModel`, one policy after another, against
the embedded local model (Gemma 3 270M, llama.cpp in-process) and the loopback remote (a real
HTTP server whose echo backend replays a measured provider's TTFT and token pace; a model-free
backend, so the "hosted API" does not take CPU from the device, as a real one would not).
Requests go one at a time (the next is sent `think_s` after the previous answer ended), every
policy starts from the same priors, and learned profiles are never persisted (see `_live_run`).

The replay: each policy's requests go through `Simulator` with the same arrival times, prompt
and answer lengths, cost model and policy (a fresh object, the same priors), and with what the
live run learned instead of bundled measurements:

- the device: the `DeviceProfile` learned over the whole live run (TTFT line, decode rate),
  with the spread of the device TTFTs measured around that line (`SimDevice.learned`); like
  llama.cpp, it cannot interrupt a prefill (a lost race keeps it busy until the prefill ends);
- the server: *paired* by default: a request the live run sent to the server gets the TTFT
  delay and token gap the loopback drew for that very request, plus the HTTP overhead measured
  over the run; any other request draws from the loopback's latency profile (plus the same
  overhead). The unpaired variant draws every request, and is reported too: its difference to
  the paired one is sampling noise, not model error. So is a variant with the simulator's
  default device, which stops a prefill at once (see `_live_replay`).

Then, per policy: measured vs simulated mean and p99 TTFT and mean cost, with relative errors.
"""

from __future__ import annotations

import asyncio
import math
import random
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from langchain_disco.bench._live_replay import (
    TTFT_TOLERANCE,
    PolicyComparison,
    Stats,
    replay,
)
from langchain_disco.bench._live_run import (
    N_CTX,
    LiveSample,
    Progress,
    run_policies,
)
from langchain_disco.bench._measure import machine_info
from langchain_disco.bench._sim_options import load_bench_trace
from langchain_disco.errors import ConfigError
from langchain_disco.scheduling import Profiles
from langchain_disco.scheduling.policies import POLICY_NAMES
from langchain_disco.scheduling.profiles import DEFAULT_DEVICE_PRIOR
from langchain_disco.sim import Trace
from langchain_disco.testing.latency import NO_LATENCY, LatencyProfile

__all__ = [
    "DEFAULT_POLICIES",
    "TTFT_TOLERANCE",
    "LiveBenchResult",
    "LiveOptions",
    "LiveRequest",
    "LiveSample",
    "PolicyComparison",
    "Stats",
    "build_requests",
    "parse_policies",
    "run_live",
]

DEFAULT_POLICIES: tuple[str, ...] = (
    "local",
    "remote",
    "race",
    "length_threshold",
    "wait_time",
    "generalized",
)


# -- options ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LiveOptions:
    """What `run_live` runs; `validate()` names the option and the fix of a bad value."""

    trace: Path | None = None
    """A CSV trace; None: the bundled Azure 2023 conversation trace."""
    requests: int = 18
    """Requests per policy (the first N of the trace)."""
    think_s: float = 0.4
    """Pause between the end of an answer and the next request (a user reading it)."""
    policies: tuple[str, ...] = DEFAULT_POLICIES
    budget: float = 0.5
    """The budget share of the budgeted policies (each on its own default resource)."""
    latency_profile: str = "lepton-7b"
    """The measured provider-size the loopback remote replays (and the policies' server prior)."""
    max_tokens: int = 16
    """Answer cap of every request."""
    min_prompt_tokens: int = 16
    max_prompt_tokens: int = 700
    """The longest of the N trace prompts is scaled to this many tokens, the rest alike."""
    seed: int = 0
    """Seeds the loopback's latency draws, the prompts' filler text and the simulator."""
    local_threads: int = 1
    """llama.cpp threads of the local model."""
    device_prior: str = DEFAULT_DEVICE_PRIOR
    """The device prior the policies start from, live and simulated."""

    def validate(self) -> LiveOptions:
        problems = []
        if self.requests < 1:
            problems.append(f"--requests must be at least 1, got {self.requests}")
        if not self.policies:
            problems.append(f"--policies is empty: choose from {', '.join(POLICY_NAMES)}")
        if not 0.0 <= self.budget <= 1.0:  # also rejects NaN
            problems.append(
                f"--budget {self.budget:g} is outside [0, 1]: a budget is a share of the "
                "budgeted resource (0 never spends it, 1 races every request)"
            )
        if self.latency_profile == NO_LATENCY:
            problems.append(
                "--latency-profile none has no server TTFT to compare; choose a measured "
                "provider-size such as lepton-7b"
            )
        if not 0.0 <= self.think_s <= 60.0:
            problems.append(f"--think-s must be between 0 and 60 seconds, got {self.think_s:g}")
        if self.max_tokens < 1:
            problems.append(f"--max-tokens must be at least 1, got {self.max_tokens}")
        if self.min_prompt_tokens < 1:
            problems.append(f"--min-prompt-tokens must be at least 1, got {self.min_prompt_tokens}")
        if self.max_prompt_tokens < self.min_prompt_tokens:
            problems.append(
                f"--max-prompt-tokens {self.max_prompt_tokens} is below --min-prompt-tokens "
                f"{self.min_prompt_tokens}"
            )
        # The estimate is ~4 characters per token; the real count is close but not exact.
        limit = N_CTX // 2
        if self.max_prompt_tokens + self.max_tokens > limit:
            problems.append(
                f"--max-prompt-tokens + --max-tokens must stay within {limit} (the local "
                f"model's context is {N_CTX} tokens), got "
                f"{self.max_prompt_tokens + self.max_tokens}"
            )
        if self.local_threads < 1:
            problems.append(f"--local-threads must be at least 1, got {self.local_threads}")
        if problems:
            raise ConfigError("; ".join(problems))
        LatencyProfile(self.latency_profile)  # an unknown name raises, listing the valid ones
        try:
            Profiles.prior(self.device_prior, self.latency_profile)
        except ConfigError as exc:
            raise ConfigError(f"--latency-profile {self.latency_profile}: {exc}") from None
        return self

    def command(self, out: Path | str | None = None) -> str:
        """The `disco bench live` command line that runs exactly these options."""
        parts = ["disco bench live"]
        if self.trace is not None:
            parts.append(f"--trace {self.trace}")
        parts += [
            f"--requests {self.requests}",
            "--policies " + ",".join(self.policies),
            f"--think-s {self.think_s:g}",
            f"--budget {self.budget:g}",
            f"--latency-profile {self.latency_profile}",
            f"--max-tokens {self.max_tokens}",
            f"--min-prompt-tokens {self.min_prompt_tokens}",
            f"--max-prompt-tokens {self.max_prompt_tokens}",
            f"--seed {self.seed}",
        ]
        if self.local_threads != 1:
            parts.append(f"--local-threads {self.local_threads}")
        if out is not None:
            parts.append(f"--out {out}")
        return " ".join(parts)


def parse_policies(text: str) -> tuple[str, ...]:
    """Comma-separated dispatch policies (or `all`), in the order given, without repeats."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise ConfigError(f"--policies is empty: choose from {', '.join(POLICY_NAMES)}, or all")
    if "all" in items:
        return POLICY_NAMES
    out: list[str] = []
    for name in items:
        if name not in POLICY_NAMES:
            raise ConfigError(
                f"--policies: unknown policy {name!r}; choose from {', '.join(POLICY_NAMES)}, "
                "or all"
            )
        if name not in out:
            out.append(name)
    return tuple(out)


# -- the workload -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LiveRequest:
    """One request of the workload: the trace's lengths, scaled, and the text that has them."""

    index: int
    trace_prompt_tokens: int
    prompt_tokens: int
    """The scaled length; the text has 4 characters per token, so the model's estimate is this."""
    text: str


_FILLER = (
    "The lighthouse keeper climbed the spiral stairs before dawn to trim the wick.",
    "A convoy of trucks crossed the desert, raising a plume of orange dust behind it.",
    "In the market square, a baker sold bread still warm from the wood-fired oven.",
    "The old map showed a river that no longer existed, dried up a century ago.",
    "Engineers tested the bridge by rolling heavy carts across it one at a time.",
    "A flock of starlings turned over the fields like smoke caught in the wind.",
    "The librarian found a letter tucked inside a book that nobody had borrowed.",
    "Snow fell on the mountain village, and the school closed for the afternoon.",
    "The ship's cook traded spices at every port and kept a journal of recipes.",
    "Two chess players sat in the park until the streetlights came on around them.",
    "The inventor's workshop smelled of oil, solder and freshly cut pine boards.",
    "A storm knocked out the power, so the family told stories by candlelight.",
)


def build_requests(trace: Trace, options: LiveOptions) -> list[LiveRequest]:
    """The first `options.requests` of `trace`, prompts scaled by one factor (the longest to
    `max_prompt_tokens`, none below `min_prompt_tokens`), with distinct text of that length."""
    prompts = trace.prompt_tokens[: options.requests]
    scale = options.max_prompt_tokens / max(prompts)
    out = []
    for i, trace_tokens in enumerate(prompts):
        tokens = min(
            max(round(trace_tokens * scale), options.min_prompt_tokens), options.max_prompt_tokens
        )
        out.append(LiveRequest(i, trace_tokens, tokens, _text(i, tokens, options.seed)))
    return out


def _text(index: int, tokens: int, seed: int) -> str:
    # A distinct opening, so that no request rides on the KV cache of the one before it.
    head = f"Request {index}. Continue this story in detail: "
    rng = random.Random(f"disco-bench-live-{seed}-{index}")
    chars = 4 * tokens
    body = head
    while len(body) < chars:
        body += " " + rng.choice(_FILLER)
    return body[:chars]


# -- results ------------------------------------------------------------------------------------


@dataclass
class LiveBenchResult:
    """Everything one `disco bench live` run measured and simulated."""

    options: LiveOptions
    trace_name: str
    requests: list[LiveRequest]
    samples: list[LiveSample]
    comparisons: list[PolicyComparison]
    learned: dict[str, float]
    """The device profile learned over the run, and the server's measured HTTP overhead."""
    sim_requests: list[dict[str, Any]]
    """Per request: the simulated TTFT, winner and action next to the measured ones."""
    wall_s: float = 0.0
    machine: dict[str, Any] = field(default_factory=machine_info)
    notes: list[str] = field(default_factory=list)

    @property
    def all_within_tolerance(self) -> bool:
        return all(c.within_tolerance for c in self.comparisons)

    def to_json(self) -> dict[str, Any]:
        options = {**asdict(self.options), "trace": str(self.options.trace or "") or None}
        options["policies"] = list(self.options.policies)
        options["command"] = self.options.command()
        data: dict[str, Any] = _finite(
            {
                "options": options,
                "machine": self.machine,
                "trace": self.trace_name,
                "tolerance": TTFT_TOLERANCE,
                "all_within_tolerance": self.all_within_tolerance,
                "learned": self.learned,
                "wall_s": self.wall_s,
                "notes": self.notes,
                "rows": [c.row() for c in self.comparisons],
                "requests": self.sim_requests,
            }
        )
        return data


def _finite(value: Any) -> Any:
    """NaN and infinities as JSON null (json.dumps would write invalid `NaN`)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


# -- the whole benchmark ------------------------------------------------------------------------


def run_live(
    options: LiveOptions, *, trace: Trace | None = None, progress: Progress | None = None
) -> LiveBenchResult:
    """Run every policy live, replay each in the simulator, and compare them."""
    from langchain_disco._model_files import resolve_model_path
    from langchain_disco.testing.loopback import LoopbackServer

    options.validate()
    start = time.perf_counter()
    if trace is None:
        trace = load_bench_trace(options.trace, options.requests)
    requests = build_requests(trace, options)
    notes: list[str] = []
    if len(requests) < options.requests:
        notes.append(
            f"the trace has {len(requests)} requests, fewer than --requests {options.requests}: "
            "all of them were run"
        )
    resolve_model_path(None)  # no embedded model: a ConfigError that says how to install it
    report = progress or (lambda _done, _total: None)
    # A private profile path as well: even a caller's DISCO_PERSIST_PROFILES cannot reach the
    # user's cache (persistence is also switched off per model).
    with (
        tempfile.TemporaryDirectory(prefix="disco-bench-live-") as scratch,
        LoopbackServer(
            backend="echo",
            echo_tok_s=0.0,  # the latency profile's measured gap paces the tokens
            latency_profile=options.latency_profile,
            seed=options.seed,
        ) as server,
    ):
        run = asyncio.run(
            run_policies(
                options,
                requests,
                server.base_url,
                server.model_name,
                server.requests,
                server.clear_requests,
                report,
                Path(scratch) / "profiles.json",
            )
        )
    comparisons, learned, per_request = replay(options, run)
    return LiveBenchResult(
        options=options,
        trace_name=trace.name,
        requests=requests,
        samples=run.samples,
        comparisons=comparisons,
        learned=learned,
        sim_requests=per_request,
        wall_s=time.perf_counter() - start,
        notes=notes,
    )
