"""The replay half of `disco bench live`: each policy's live requests through `Simulator`.

The simulator gets what the live run learned instead of bundled measurements: the device line
learned over the whole run (`SimDevice.learned`, with the spread of the unraced device TTFTs),
a device that cannot interrupt a prefill (as llama.cpp), the server paired request by request
with the loopback's own draws (plus the HTTP overhead measured in the run), the policies told
the answer cap. Two more replays isolate causes: *unpaired* (every server TTFT drawn from the
latency profile: sampling noise) and *interruptible prefill* (the simulator's default device,
which stops the moment it loses a race: what ignoring llama.cpp's behaviour costs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from langchain_disco.bench._live_run import LiveRun, LiveSample, policy_budget
from langchain_disco.scheduling import CostModel, Profiles, policy_from_name
from langchain_disco.scheduling.dispatch import RequestOutcome
from langchain_disco.sim import SimConfig, SimDevice, SimResult, Simulator, Trace, percentile
from langchain_disco.testing.latency import LatencyProfile

if TYPE_CHECKING:
    from langchain_disco.bench.live import LiveOptions

TTFT_TOLERANCE = 0.15
"""Acceptance: simulated mean TTFT within 15% (relative) of the measured one, per policy."""


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
    """The same replay with every server TTFT drawn from the profile (sampling noise)."""
    sim_interruptible: Stats
    """The same replay with a device that stops its prefill the moment it loses a race."""
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
    def interruptible_mean_ttft_err(self) -> float:
        return rel_err(self.sim_interruptible.mean_ttft_s, self.live.mean_ttft_s)

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
        out["sim_interruptible_mean_ttft_s"] = self.sim_interruptible.mean_ttft_s
        out["interruptible_mean_ttft_rel_err"] = self.interruptible_mean_ttft_err
        out["same_action_share"] = self.same_action_share
        out["device_vs_learned"] = self.device_vs_learned
        out["live_wall_s"] = self.live_wall_s
        return out


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
    paired: bool = True,
    interruptible: bool = False,
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
        device_prefill_interruptible=interruptible,
    )
    budget = policy_budget(name, options.budget)
    policy = policy_from_name(name, budget, options.seed)
    profiles = Profiles.prior(options.device_prior, options.latency_profile)
    return Simulator(trace, config).run(policy, budget, profiles=profiles)


def replay(
    options: LiveOptions, run: LiveRun
) -> tuple[list[PolicyComparison], dict[str, float], list[dict[str, Any]]]:
    """Per policy: the comparison; the learned device and server overhead; per request rows."""
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
        args = (options, name, live, device, pool, overhead, run.cost_model)
        sim = _simulate(*args)
        unpaired = _simulate(*args, paired=False)
        interruptible = _simulate(*args, interruptible=True)
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
                sim=_sim_stats(sim),
                sim_unpaired=_sim_stats(unpaired),
                sim_interruptible=_sim_stats(interruptible),
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
                    "sim_unpaired_ttft_s": unpaired.ttft_s[i],
                    "sim_interruptible_ttft_s": interruptible.ttft_s[i],
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
