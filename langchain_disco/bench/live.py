"""`disco bench live`: the simulator checked against the real thing, on the same requests.

The live run: N requests of a trace (prompt lengths scaled by one factor so the longest fits
the local model, answers capped) go through `DiscoChatModel`, one policy after another, against
the embedded local model (Gemma 3 270M, llama.cpp in-process) and the loopback remote (a real
HTTP server whose echo backend replays a measured provider's TTFT and token pace; a model-free
backend, so the "hosted API" does not take CPU from the device, as a real one would not).
Requests go one at a time (closed loop: the next is sent when the previous answer has ended),
every policy starts from the same priors, and learned profiles are never persisted.

The replay: each policy's requests go through `Simulator` with the same arrival times, prompt
and answer lengths, cost model and policy (a fresh object, the same priors), and with what the
live run learned instead of bundled measurements:

- the device: the `DeviceProfile` learned over the whole live run (TTFT line, decode rate),
  with the spread of the device TTFTs measured around that line (`SimDevice.learned`);
- the server: *paired* by default: a request the live run sent to the server gets the TTFT
  delay and token gap the loopback drew for that very request, plus the HTTP overhead measured
  over the run; any other request draws from the loopback's latency profile (plus the same
  overhead). The unpaired variant draws every request, and is reported too: its difference to
  the paired one is sampling noise, not model error.

Then, per policy: measured vs simulated mean and p99 TTFT and mean cost, with relative errors.
"""

from __future__ import annotations

import asyncio
import math
import random
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from langchain_disco.bench._live_run import (
    N_CTX,
    LiveRun,
    LiveSample,
    Progress,
    policy_budget,
    run_policies,
)
from langchain_disco.bench._measure import machine_info
from langchain_disco.bench._sim_options import load_bench_trace
from langchain_disco.errors import ConfigError
from langchain_disco.scheduling import CostModel, Profiles, policy_from_name
from langchain_disco.scheduling.dispatch import RequestOutcome
from langchain_disco.scheduling.policies import POLICY_NAMES
from langchain_disco.scheduling.profiles import DEFAULT_DEVICE_PRIOR
from langchain_disco.sim import SimConfig, SimDevice, SimResult, Simulator, Trace, percentile
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
TTFT_TOLERANCE = 0.15
"""Acceptance: simulated mean TTFT within 15% (relative) of the measured one, per policy."""


# -- options ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LiveOptions:
    """What `run_live` runs; `validate()` names the option and the fix of a bad value."""

    trace: Path | None = None
    """A CSV trace; None: the bundled Azure 2023 conversation trace."""
    requests: int = 20
    """Requests per policy (the first N of the trace)."""
    think_s: float = 0.5
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


@dataclass(frozen=True)
class Stats:
    """One policy's summary, measured or simulated."""

    mean_ttft_s: float
    p50_ttft_s: float
    p99_ttft_s: float
    mean_cost_usd: float
    mean_server_usd: float
    mean_device_j: float
    local_win_share: float

    @classmethod
    def of(
        cls,
        ttft_s: Sequence[float],
        unified_usd: Sequence[float],
        server_usd: Sequence[float],
        device_j: Sequence[float],
        winners: Sequence[str],
    ) -> Stats:
        n = len(ttft_s)
        return cls(
            mean_ttft_s=sum(ttft_s) / n,
            p50_ttft_s=percentile(ttft_s, 50),
            p99_ttft_s=percentile(ttft_s, 99),
            mean_cost_usd=sum(unified_usd) / n,
            mean_server_usd=sum(server_usd) / n,
            mean_device_j=sum(device_j) / n,
            local_win_share=sum(w == "local" for w in winners) / n,
        )


def rel_err(simulated: float, measured: float) -> float:
    """simulated / measured - 1 (NaN when nothing was measured)."""
    return simulated / measured - 1.0 if measured else math.nan


@dataclass
class PolicyComparison:
    """One policy: measured, simulated (paired server draws) and simulated (unpaired)."""

    policy: str
    n: int
    live: Stats
    sim: Stats
    sim_unpaired: Stats
    same_action_share: float
    """Requests on which the simulated policy took the same action as the live one."""
    live_wall_s: float
    device_vs_learned: float = math.nan
    """The device's measured TTFT over the learned line's prediction, averaged over this
    policy's requests where it was seen unraced (NaN: none): 1 means the device ran, while this
    policy ran, as fast as the line learned over the whole run says; above 1, slower."""

    @property
    def mean_ttft_err(self) -> float:
        return rel_err(self.sim.mean_ttft_s, self.live.mean_ttft_s)

    @property
    def p99_ttft_err(self) -> float:
        return rel_err(self.sim.p99_ttft_s, self.live.p99_ttft_s)

    @property
    def cost_err(self) -> float:
        return rel_err(self.sim.mean_cost_usd, self.live.mean_cost_usd)

    @property
    def unpaired_mean_ttft_err(self) -> float:
        return rel_err(self.sim_unpaired.mean_ttft_s, self.live.mean_ttft_s)

    @property
    def within_tolerance(self) -> bool:
        return abs(self.mean_ttft_err) <= TTFT_TOLERANCE

    def row(self) -> dict[str, Any]:
        """The flat CSV row: measured and simulated side by side, relative errors."""
        out: dict[str, Any] = {"policy": self.policy, "n": self.n}
        for key in ("mean_ttft_s", "p99_ttft_s", "mean_cost_usd"):
            out[f"live_{key}"] = getattr(self.live, key)
            out[f"sim_{key}"] = getattr(self.sim, key)
        out["mean_ttft_rel_err"] = self.mean_ttft_err
        out["p99_ttft_rel_err"] = self.p99_ttft_err
        out["mean_cost_rel_err"] = self.cost_err
        out["within_tolerance"] = self.within_tolerance
        for key in ("p50_ttft_s", "mean_server_usd", "mean_device_j", "local_win_share"):
            out[f"live_{key}"] = getattr(self.live, key)
            out[f"sim_{key}"] = getattr(self.sim, key)
        out["sim_unpaired_mean_ttft_s"] = self.sim_unpaired.mean_ttft_s
        out["unpaired_mean_ttft_rel_err"] = self.unpaired_mean_ttft_err
        out["same_action_share"] = self.same_action_share
        out["device_vs_learned"] = self.device_vs_learned
        out["live_wall_s"] = self.live_wall_s
        return out


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


# -- the replay ---------------------------------------------------------------------------------


def _learned_profiles(options: LiveOptions, outcomes: list[RequestOutcome]) -> Profiles:
    """The priors every policy started from, taught every outcome of the run, in order."""
    profiles = Profiles.prior(options.device_prior, options.latency_profile)
    for outcome in outcomes:
        profiles.observe(outcome)
    return profiles


def _server_overhead_s(samples: list[LiveSample]) -> float:
    """Mean of measured server TTFT minus the delay the loopback drew: HTTP and streaming."""
    gaps = [
        s.remote_ttft_s - s.server_delay_s
        for s in samples
        if s.remote_ttft_s is not None and s.server_delay_s is not None
    ]
    return sum(gaps) / len(gaps) if gaps else 0.0


def _unselected_device_ttfts(samples: list[LiveSample]) -> list[tuple[int, float]]:
    """(prompt tokens, device TTFT) of requests where the device's TTFT was seen whatever its
    value (no server racing it yet): raced ones are seen mostly when the device was fast."""
    return [
        (s.prompt_tokens, s.local_ttft_s)
        for s in samples
        if s.local_ttft_s is not None
        and (s.remote_offset_s is None or s.remote_offset_s >= s.local_ttft_s)
    ]


def _simulate(
    options: LiveOptions,
    name: str,
    samples: list[LiveSample],
    device: SimDevice,
    pool: tuple[tuple[float, float], ...],
    overhead_s: float,
    cost_model: CostModel,
    *,
    paired: bool,
) -> SimResult:
    trace = Trace(
        arrival_s=tuple(s.arrival_s - samples[0].arrival_s for s in samples),
        prompt_tokens=tuple(s.prompt_tokens for s in samples),
        output_tokens=tuple(max(s.output_tokens, 1) for s in samples),
        name=f"live-{name}",
    )
    replay = tuple(
        (s.server_delay_s + overhead_s, s.server_gap_s or 0.0)
        if paired and s.server_delay_s is not None
        else None
        for s in samples
    )
    config = SimConfig(
        cost_model=cost_model,
        n_devices=1,
        seed=options.seed,
        device_model=device,
        server_pool=pool,
        server_replay=replay,
        max_tokens=options.max_tokens,
        # llama.cpp cannot stop inside a prefill (see `_live_run`): a device that lost a race
        # keeps the next request waiting, and bills its whole prefill, live and here.
        device_prefill_interruptible=False,
    )
    budget = policy_budget(name, options.budget)
    policy = policy_from_name(name, budget, options.seed)
    profiles = Profiles.prior(options.device_prior, options.latency_profile)
    return Simulator(trace, config).run(policy, budget, profiles=profiles)


def _compare(
    options: LiveOptions, run: LiveRun
) -> tuple[list[PolicyComparison], dict[str, float], list[dict[str, Any]]]:
    profiles = _learned_profiles(options, run.outcomes)
    device = SimDevice.learned(
        profiles.device, _unselected_device_ttfts(run.samples), name="learned live device"
    )
    overhead = _server_overhead_s(run.samples)
    measured = LatencyProfile(options.latency_profile).samples
    pool = tuple((s.ttft_s + overhead, s.inter_token_s) for s in measured)
    comparisons, per_request = [], []
    for name in options.policies:
        live = [s for s in run.samples if s.policy == name]
        sims = {
            paired: _simulate(
                options, name, live, device, pool, overhead, run.cost_model, paired=paired
            )
            for paired in (True, False)
        }
        sim = sims[True]
        same = sum(s.action == a for s, a in zip(live, sim.action, strict=True)) / len(live)
        seen = _unselected_device_ttfts(live)
        speed = [ttft / device.mean_prefill_s(prompt) for prompt, ttft in seen]
        comparisons.append(
            PolicyComparison(
                policy=name,
                n=len(live),
                live=Stats.of(
                    [s.ttft_s for s in live],
                    [s.unified_usd for s in live],
                    [s.server_usd for s in live],
                    [s.device_j for s in live],
                    [s.winner for s in live],
                ),
                sim=_sim_stats(sims[True]),
                sim_unpaired=_sim_stats(sims[False]),
                same_action_share=same,
                live_wall_s=run.wall_s[name],
                device_vs_learned=sum(speed) / len(speed) if speed else math.nan,
            )
        )
        for i, s in enumerate(live):
            per_request.append(
                {
                    **asdict(s),
                    "sim_ttft_s": sim.ttft_s[i],
                    "sim_winner": sim.winner[i],
                    "sim_action": sim.action[i],
                    "sim_unified_usd": sim.unified_usd[i],
                    "sim_device_j": sim.device_j[i],
                    "sim_unpaired_ttft_s": sims[False].ttft_s[i],
                }
            )
    learned = {
        "device_overhead_s": profiles.device.overhead_s,
        "device_prefill_tok_s": profiles.device.prefill_tok_s,
        "device_decode_tok_s": profiles.device.decode_tok_s,
        "device_ttft_observations": float(profiles.device.n_ttft),
        "device_spread_samples": float(len(device.ratios)),
        "server_http_overhead_s": overhead,
    }
    return comparisons, learned, per_request


def _sim_stats(result: SimResult) -> Stats:
    return Stats.of(
        result.ttft_s, result.unified_usd, result.server_usd, result.device_j, result.winner
    )


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
    comparisons, learned, per_request = _compare(options, run)
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
