"""Trace replay on a virtual clock, running the same policy objects as the live model.

What is simulated, and from which data:

- the server: TTFT and inter-token gap of one *measured* llmperf request of the chosen
  provider-size, drawn per request (seeded); it has unbounded capacity (a hosted API);
- the device: TTFT = the least-squares line of its measured rows in `device_speeds.csv` (the
  same line its prior uses), times the relative residual of one measured row normalised to
  mean 1 (drawn per request; devices measured at a single point are noise-free), with the
  decode rate of that row; and it is *serialised*: one generation at a
  time, first come first served, a queued or prefilling request leaves when its race is lost;
- users: a production trace's arrival rate is that of many users, so requests are spread over
  `n_devices` independent devices, round-robin by default (a person sends the next message
  after the previous answer, which is more regular than a random split; `assignment="random"`
  draws the device per request instead). By default `n_devices` is sized so that sending
  *every* request to the device would keep each device `device_only_utilisation` = 30% busy:
  moderate load, where queueing matters sometimes but does not dominate. Every run reports the
  utilisation it realised.

Each request is planned at arrival with the context the live model would have (profiles
learned so far, a *predicted* device queue wait from the jobs visible on its device), then
resolved by `scheduling.estimates.resolve_action` (hedges, first token wins, the loser is
cancelled and bills what it used). Feedback (`Profiles.observe`, `policy.observe`) is delivered
when the request completes on the virtual clock, as it would be live. All randomness is drawn up
front from one seeded generator, identically for every policy: runs compare policies on the
same requests, and a seed replays exactly.

After the first token, `run(..., migration=policy, pace_tok_s=...)` plays each answer through
the live engine's own per-request core (`engine.core.RequestCore`, driven on the virtual clock
by `sim.streaming`): the same migration views and decisions, probes, hand-overs, paced release,
stall-bounded hand-back and billing as live. A server target's TTFT and decode gap are one more
measured request of the same provider (drawn up front from a separate seeded stream, so runs
without migration see exactly the same draws as before); a device target queues behind the jobs
already on its device and prefills prompt + generated tokens at the request's own measured rate
(less what a probe already prefilled). The decision is taken when the request is replayed (its
device state is what the requests before it left), like every other device reservation here;
profiles learn from the dispatch phase only (the migration target's TTFT is not fed back).

A multi-turn trace (`Trace.hash_ids`, e.g. the Mooncake JSONL) adds prefix caches
(`sim.prefix_cache`, `SimConfig.caches`): each device keeps an LRU of the KV states of the
prompts it ran, the provider a time-to-live cache of the prefixes it was sent; a request's
device prefill covers its uncached tokens only, its server input reads the cached part at the
cached-input price and answers sooner. Round-robin assignment then deals out conversations, not
requests: a follow-up turn (its prompt extends an earlier prompt) goes to that prompt's device,
as a person's next message goes to the same phone. Cache-aware dispatch is told the device's
cached tokens (`RequestFeatures.local_cached_tokens`) and learns on evaluated tokens;
cache-blind dispatch (`CacheConfig(aware=False)`) is not, while the caches act the same. The
device cache a request is planned and run with is what the requests before it on its device
left (booked in arrival order, as the device runs them); migration targets are not yet told of
the caches. A trace without prefix structure replays exactly as before.

To replay a live run (`disco bench live`), `SimConfig` can replace the measured data with what
that run learned: `device_model` (e.g. `SimDevice.learned(profile)`, the learned TTFT line and
decode rate), `server_pool` (the (TTFT, gap) pairs the server is drawn from), `server_replay`
(per request, the server's TTFT and gap as that very request saw them live: a paired replay),
and `max_tokens` (the answer cap the policies are told, as live requests tell them).
"""

from __future__ import annotations

import functools
import gc
import heapq
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from langchain_disco.report import EndpointRun, RequestReport
from langchain_disco.scheduling import _data
from langchain_disco.scheduling._data import ServerSample
from langchain_disco.scheduling.budget import Budget
from langchain_disco.scheduling.cost import Cost, CostModel
from langchain_disco.scheduling.dispatch import (
    DispatchContext,
    DispatchPolicy,
    Plan,
    RequestFeatures,
    RequestOutcome,
)
from langchain_disco.scheduling.estimates import (
    RACE,
    DeviceJob,
    Resolution,
    predict_queue_wait_s,
    resolve_action,
)
from langchain_disco.scheduling.migration import (
    MigrationPolicy,
    NoMigration,
    ProfileMigrationPredictor,
    StallDetector,
)
from langchain_disco.scheduling.profiles import (
    DeviceProfile,
    Profiles,
    ServerProfile,
    fit_ttft_line,
)
from langchain_disco.scheduling.roles import Role
from langchain_disco.sim.delivery import GapRun, Playout, unmoved
from langchain_disco.sim.metrics import RunMetrics, summarize
from langchain_disco.sim.oracle import OracleResult, solve_oracle
from langchain_disco.sim.prefix_cache import CacheConfig, CachedTokens, warm_blocks
from langchain_disco.sim.streaming import DeviceScript, ServerScript, StreamedRequest, play
from langchain_disco.sim.timeline import MigratedStream
from langchain_disco.sim.trace import Trace
from langchain_disco.sim.virtual import Opening

DEFAULT_DEVICE_ONLY_UTILISATION = 0.3
_CACHE_SIZE = 1 << 16
"""Entries a replay keeps, per table, of the figures its requests share (floors, prefills, gap
runs, result floats): a tiled trace repeats them; one that does not costs a bounded table."""


@dataclass(frozen=True)
class SimDevice:
    """The simulated device's truth, from its measured rows."""

    name: str
    overhead_s: float
    s_per_token: float
    ratios: tuple[float, ...]
    """Relative TTFT residual of each measured row (1.0 for a single measurement)."""
    decode_tok_s: tuple[float, ...]

    @classmethod
    def measured(cls, name: str) -> SimDevice:
        rows = _data.device_rows().get(name)
        if rows is None:
            raise ValueError(f"unknown device {name!r}; known: {sorted(_data.device_rows())}")
        points = [(r.prompt_tokens, r.ttft_s) for r in rows if r.prompt_tokens and r.ttft_s]
        overhead, slope = fit_ttft_line(points)
        if slope is None:
            rates = [r.prefill_tok_s for r in rows if r.prefill_tok_s]
            overhead, slope = 0.0, 1.0 / (sum(rates) / len(rates))
            ratios: tuple[float, ...] = (1.0,) * len(rows)
        else:
            # The measured spread around the fitted line, normalised to mean 1 so the line
            # (which is also the policies' prior) is the device's mean TTFT.
            raw = [
                (r.ttft_s / (overhead + slope * r.prompt_tokens))
                if r.prompt_tokens and r.ttft_s
                else 1.0
                for r in rows
            ]
            mean_ratio = sum(raw) / len(raw)
            ratios = tuple(x / mean_ratio for x in raw)
        decodes = [r.decode_tok_s for r in rows if r.decode_tok_s]
        mean_decode = sum(decodes) / len(decodes)
        return cls(
            name,
            overhead,
            slope,
            ratios,
            tuple(r.decode_tok_s or mean_decode for r in rows),
        )

    @classmethod
    def learned(
        cls,
        profile: DeviceProfile,
        samples: Iterable[tuple[int, float]] = (),
        name: str | None = None,
    ) -> SimDevice:
        """A device whose truth is a learned profile: its TTFT line and decode rate.

        `samples` ((prompt tokens, measured TTFT s) pairs, e.g. the live requests the profile
        learned from) give the spread around the line, normalised to mean 1 as in `measured`;
        without them the device is noise-free.
        """
        overhead, slope = profile.overhead_s, 1.0 / profile.prefill_tok_s
        raw = [
            ttft / (overhead + slope * prompt)
            for prompt, ttft in samples
            if ttft > 0 and overhead + slope * prompt > 0
        ]
        mean_ratio = sum(raw) / len(raw) if raw else 1.0
        ratios = tuple(x / mean_ratio for x in raw) or (1.0,)
        decode = (profile.decode_tok_s,) * len(ratios)
        return cls(name or profile.name, overhead, slope, ratios, decode)

    def mean_prefill_s(self, prompt_tokens: int) -> float:
        return self.overhead_s + self.s_per_token * prompt_tokens


@dataclass(frozen=True)
class SimConfig:
    """A scenario: which measured device and server, prices, and the simulation's seed."""

    device: str = "MacBook Pro M1 Max"
    server: str = "together-13b"
    cost_model: CostModel = field(default_factory=CostModel)
    n_devices: int | None = None
    """None: sized for `device_only_utilisation` (see the module docstring)."""
    device_only_utilisation: float = DEFAULT_DEVICE_ONLY_UTILISATION
    assignment: Literal["round_robin", "random"] = "round_robin"
    seed: int = 0
    prior_device: str | None = None
    """The device prior policies start from (default: the simulated device's own)."""
    prior_server: str | None = None
    """The server prior policies start from (default: the simulated server's own)."""
    remote_exact_continuation: bool = True
    """The server can continue a partial answer exactly (vLLM, SGLang, DeepSeek, llama.cpp
    server); False for an API that cannot (the official OpenAI API): no migration to it."""
    device_model: SimDevice | None = None
    """The device's truth instead of the measured rows of `device` (e.g. what a live run
    learned, `SimDevice.learned`)."""
    server_pool: tuple[tuple[float, float], ...] | None = None
    """(TTFT s, inter-token gap s) pairs the server is drawn from instead of the measured
    requests of `server` (e.g. a loopback server's latency profile)."""
    prior_server_pool: tuple[tuple[float, float], ...] | None = None
    """(TTFT s, gap s) pairs the policies' server prior is built from instead of the measured
    requests of `prior_server` (e.g. a user's own measurements, `disco bench sim
    --server-prior my.csv`)."""
    server_replay: tuple[tuple[float, float] | None, ...] | None = None
    """Per request (trace order), the server's (TTFT s, gap s) as that request saw it live, or
    None to draw it: a paired replay of a live run. Draws are made either way, so the device's
    draws do not depend on which requests are replayed."""
    max_tokens: int | None = None
    """The answer-length cap every request tells the policies (live: `max_tokens`); None:
    uncapped, the policies expect the learned answer length."""
    device_prefill_interruptible: bool = True
    """False: a device that loses the race during its prefill keeps computing, and spending
    prefill energy, until that prefill ends (llama.cpp evaluates a prompt in one call and
    checks for cancellation between tokens); the next job waits for it. True: it stops at once."""
    caches: CacheConfig | None = None
    """The prefix caches of a multi-turn trace (None: `CacheConfig()`, cache-aware with the
    documented defaults); ignored for a trace without prefix structure."""


@dataclass
class SimResult:
    """Per-request outcomes (in trace order) and the run's metrics."""

    policy: str
    metrics: RunMetrics
    ttft_s: list[float]
    tbt_s: list[float]
    server_usd: list[float]
    device_j: list[float]
    unified_usd: list[float]
    spend: list[float]
    floor: list[float]
    ceiling: list[float]
    winner: list[str]
    action: list[str]
    migrated: list[bool] = field(default_factory=list)
    migration_token: list[int | None] = field(default_factory=list)
    """Source tokens delivered before the hand-over (None: not migrated)."""
    stall_added_s: list[float] = field(default_factory=list)
    migration_blocked_by: list[str | None] = field(default_factory=list)
    """Per request, why its answer did not move with a migration policy on
    (`Playout.blocked_by`; None: it moved, or nothing could move it)."""
    local_tokens: list[int] = field(default_factory=list)
    """Delivered tokens the device generated."""
    remote_tokens: list[int] = field(default_factory=list)
    """Delivered tokens the server generated."""
    cost_without_migration_usd: list[float] = field(default_factory=list)
    """Unified cost had the winner generated the whole answer (same dispatch outcome)."""
    tbt_runs: list[tuple[GapRun, ...]] = field(default_factory=list)
    """Each request's delivered gaps as (gap, count) runs."""
    first_migration: MigratedStream | None = None
    """The first request (trace order) whose generation moved, to redraw token by token."""
    device_cached_tokens: list[int] = field(default_factory=list)
    """Multi-turn traces: of each prompt, the tokens its device's KV cache held at arrival."""
    server_cached_tokens: list[int] = field(default_factory=list)
    """Multi-turn traces: of each prompt, the tokens the provider's cache held when the
    server was (or, not started, would have been) sent it."""


@dataclass
class _Occupancy:
    """One device job as the scheduler could see it (absolute times)."""

    prompt_tokens: int
    present_from: float
    leave: float
    begin: float
    first_token: float
    decode_tok_s: float

    def state(self, t: float) -> DeviceJob:
        if t < self.begin:
            return DeviceJob(self.prompt_tokens)
        if t < self.first_token:
            return DeviceJob(self.prompt_tokens, True, t - self.begin)
        produced = 1 + int((t - self.first_token) * self.decode_tok_s)
        return DeviceJob(self.prompt_tokens, True, t - self.begin, produced)


class Simulator:
    """Replays `trace` under `config`; `run(policy)` any number of times, same draws each run."""

    def __init__(self, trace: Trace, config: SimConfig | None = None) -> None:
        if not len(trace):
            raise ValueError("the trace is empty")
        self.trace = trace
        self.config = config = config or SimConfig()
        self.device = config.device_model or SimDevice.measured(config.device)
        samples = _server_pool(config)
        n = len(trace)
        replay = config.server_replay
        if replay is not None and len(replay) != n:
            raise ValueError(f"server_replay has {len(replay)} entries for {n} requests")
        rng = random.Random(config.seed)
        draw = rng.randrange
        device = self.device
        ratios, decodes = device.ratios, device.decode_tok_s
        n_samples, n_rows = len(samples), len(ratios)
        self._samples = samples
        self.server_ttft_s: list[float] = []
        self.server_gap_s: list[float] = []
        self.prefill_s: list[float] = []
        self.device_decode_tok_s: list[float] = []
        server_ttft, server_gap = self.server_ttft_s.append, self.server_gap_s.append
        prefill, decode = self.prefill_s.append, self.device_decode_tok_s.append
        prefill_of: dict[tuple[int, int], float] = {}
        """Prefill by (prompt tokens, measured row): one float per pair a tiled trace repeats."""
        self.device_ratio: list[float] = []
        """Multi-turn traces only: per request, its measured row's TTFT ratio (a cached turn's
        prefill is its uncached tokens on the line, times this)."""
        keep_ratio = self.device_ratio.append if trace.has_prefixes else None
        for i, prompt in enumerate(trace.prompt_tokens):
            ttft_s, gap_s = samples[draw(n_samples)]
            seen = replay[i] if replay is not None else None
            if seen is not None:
                ttft_s, gap_s = seen
            server_ttft(ttft_s)
            server_gap(gap_s)
            j = draw(n_rows)
            key = (prompt, j)
            prefill_s = prefill_of.get(key)
            if prefill_s is None:
                prefill_s = device.mean_prefill_s(prompt) * ratios[j]
                if len(prefill_of) < _CACHE_SIZE:
                    prefill_of[key] = prefill_s
            prefill(prefill_s)
            decode(decodes[j])
            if keep_ratio is not None:
                keep_ratio(ratios[j])
        self.n_devices = config.n_devices or self._auto_devices()
        self.caches = (config.caches or CacheConfig()) if trace.has_prefixes else None
        self._warm: CachedTokens | None = None
        if config.assignment == "random":
            self.assignment = [rng.randrange(self.n_devices) for _ in range(n)]
        elif trace.hash_ids is not None:
            self.assignment = _conversation_assignment(trace.hash_ids, self.n_devices)
        else:
            self.assignment = [i % self.n_devices for i in range(n)]

    def device_prefill_s(self, i: int, cached_tokens: int) -> float:
        """Request `i`'s device prefill with `cached_tokens` of its prompt in the KV cache."""
        if cached_tokens <= 0:
            return self.prefill_s[i]
        evaluated = max(self.trace.prompt_tokens[i] - cached_tokens, 1)
        return self.device.mean_prefill_s(evaluated) * self.device_ratio[i]

    @functools.cached_property
    def _continuations(self) -> tuple[list[float], list[float]]:
        """A migrated request's server continuation: one more measured request, from its own
        stream so that the draws above stay what they were before migration was modelled
        (drawn when first asked for: only a replay that can migrate needs them)."""
        samples = self._samples
        draw = random.Random(f"disco-sim-continuation-{self.config.seed}").randrange
        ttfts: list[float] = []
        gaps: list[float] = []
        for _ in range(len(self.trace)):
            ttft_s, gap_s = samples[draw(len(samples))]
            ttfts.append(ttft_s)
            gaps.append(gap_s)
        return ttfts, gaps

    @functools.cached_property
    def continuation_ttft_s(self) -> list[float]:
        """Per request, the TTFT of its server continuation (see `_continuations`)."""
        return self._continuations[0]

    @functools.cached_property
    def continuation_gap_s(self) -> list[float]:
        """Per request, the inter-token gap of its server continuation."""
        return self._continuations[1]

    def _auto_devices(self) -> int:
        trace = self.trace
        busy = sum(
            p + o / d
            for p, o, d in zip(
                self.prefill_s, trace.output_tokens, self.device_decode_tok_s, strict=True
            )
        )
        span = max(trace.span_s, 1e-9)
        return max(1, math.ceil(busy / span / self.config.device_only_utilisation))

    def run(
        self,
        policy: DispatchPolicy,
        budget: Budget | None = None,
        *,
        profiles: Profiles | None = None,
        migration: MigrationPolicy | None = None,
        pace_tok_s: float | None = None,
    ) -> SimResult:
        """Replay the trace under `policy`; `budget` says which spend to measure.

        `migration` (e.g. `CostAwareMigration()`) is asked after every source token, as live;
        `pace_tok_s` releases tokens at that rate (None: eager, as fast as generated).
        """
        if pace_tok_s is not None and not pace_tok_s > 0:
            raise ValueError(f"pace_tok_s must be > 0 or None, got {pace_tok_s}")
        replay = _TraceReplay(self, policy, budget, profiles, migration, pace_tok_s)
        # The replay allocates a few short-lived records per request and keeps almost none in
        # cycles (a 100,000-request replay left ~1,000 objects to the collector), so the cyclic
        # collector only costs time here (~12% of a replay); it runs again once we are done.
        collecting = gc.isenabled()
        gc.disable()
        try:
            return replay.execute()
        finally:
            if collecting:
                gc.enable()

    def warm_cache(self) -> CachedTokens:
        """Per request, the most tokens of its prompt each side could hold cached (its device
        every earlier prompt it was dealt, the provider every earlier prompt; see
        `prefix_cache.warm_blocks`): what the hindsight bounds of a multi-turn replay assume."""
        if self._warm is None:
            hash_ids, caches = self.trace.hash_ids, self.caches
            if hash_ids is None or caches is None:
                raise ValueError("the trace has no prefix structure")
            device, server = warm_blocks(hash_ids, self.assignment)
            shared = self.trace.shared_tokens
            block = self.trace.block_tokens
            self._warm = CachedTokens(
                [shared(i, n) for i, n in enumerate(device)],
                [
                    shared(i, n) if n * block >= caches.server_min_tokens else 0
                    for i, n in enumerate(server)
                ],
            )
        return self._warm

    def oracle(self, budget: Budget, *, spend_limit: float | None = None) -> OracleResult:
        """The hindsight oracle at `budget` (or at an absolute total `spend_limit`); on a
        multi-turn trace, with the warmest caches any run could have (`warm_cache`)."""
        caches = self.caches
        if caches is not None:
            warm = self.warm_cache()
            prompts = self.trace.prompt_tokens
            return solve_oracle(
                server_ttft_s=[
                    caches.server_ttft_s(self.server_ttft_s[i], c, prompts[i])
                    for i, c in enumerate(warm.server)
                ],
                device_ttft_s=[self.device_prefill_s(i, c) for i, c in enumerate(warm.device)],
                prompt_tokens=prompts,
                output_tokens=self.trace.output_tokens,
                budget=budget,
                cost_model=self.config.cost_model,
                spend_limit=spend_limit,
                device_prompt_tokens=[p - c for p, c in zip(prompts, warm.device, strict=True)],
                server_cached_tokens=warm.server,
            )
        return solve_oracle(
            server_ttft_s=self.server_ttft_s,
            device_ttft_s=self.prefill_s,
            prompt_tokens=self.trace.prompt_tokens,
            output_tokens=self.trace.output_tokens,
            budget=budget,
            cost_model=self.config.cost_model,
            spend_limit=spend_limit,
        )


def _conversation_assignment(hash_ids: tuple[tuple[int, ...], ...], n_devices: int) -> list[int]:
    """Round robin over conversations: a request is the next turn of an earlier one when its
    prompt extends the latest earlier prompt sharing its longest prefix (all of that prompt's
    blocks, less a partial last one) and that prefix is its conversation's own (no other
    conversation reached it: a system prompt every conversation starts with is not); it then
    goes to that conversation's device, any other request starts a conversation on the next
    device in turn."""
    root: dict[int, list[Any]] = {}
    """block -> [children, latest request through it, its conversation or -1 if shared]."""
    assignment: list[int] = []
    conversation: list[int] = []
    turn = 0
    for i, blocks in enumerate(hash_ids):
        node, depth, entry = root, 0, None
        for block in blocks:
            child = node.get(block)
            if child is None:
                break
            node, entry = child[0], child
            depth += 1
        if entry is not None and entry[2] >= 0 and depth >= len(hash_ids[entry[1]]) - 1:
            parent = entry[1]
            assignment.append(assignment[parent])
            conversation.append(conversation[parent])
        else:
            conversation.append(i)
            assignment.append(turn % n_devices)
            turn += 1
        node = root
        mine = conversation[i]
        for block in blocks:
            child = node.get(block)
            if child is None:
                child = node[block] = [{}, i, mine]
            else:
                child[1] = i
                if child[2] != mine:
                    child[2] = -1
            node = child[0]
    return assignment


def _priors(cfg: SimConfig) -> Profiles:
    """The profiles the policies start from: the configured priors, the server's from given
    samples when there are some."""
    if cfg.prior_server_pool is None:
        return Profiles.prior(
            cfg.prior_device or cfg.device, cfg.prior_server or cfg.server, seed=cfg.seed
        )
    profiles = Profiles.prior(cfg.prior_device or cfg.device, "all", seed=cfg.seed)
    samples = (ServerSample(ttft, gap) for ttft, gap in cfg.prior_server_pool)
    name = cfg.prior_server or cfg.server
    profiles.server = ServerProfile.from_samples(name, samples, seed=cfg.seed)
    return profiles


def _server_pool(config: SimConfig) -> list[tuple[float, float]]:
    """The (TTFT, gap) pairs the server is drawn from: given, or the measured provider's."""
    if config.server_pool is not None:
        if not config.server_pool:
            raise ValueError("server_pool is empty: give at least one (TTFT, gap) pair")
        return list(config.server_pool)
    samples = _data.server_samples().get(config.server)
    if samples is None:
        known = sorted(_data.server_samples())
        raise ValueError(f"unknown server {config.server!r}; known: {known}")
    return [(row.ttft_s, row.inter_token_s) for row in samples]


def _sharer() -> Callable[[float], float]:
    """A function returning one object per float value: the per-request figures recur (a
    tiled trace repeats its requests, server times are drawn from measured ones), and a
    million-request result keeps one list entry, not one float object, per request. Zeros (0.0
    equals -0.0) and anything but a float are returned as they are; at most `_CACHE_SIZE`
    values are kept, so values that never recur cost a bounded table."""
    seen: dict[float, float] = {}
    known = seen.get

    def share(x: float) -> float:
        if type(x) is not float or not x:
            return x
        y = known(x)
        if y is None:
            if len(seen) < _CACHE_SIZE:
                seen[x] = x
            return x
        return y

    return share


class _Sharers:
    """One `_sharer` per float list of the result."""

    __slots__ = ("ceiling", "device_j", "server_usd", "spend", "ttft", "unified")

    def __init__(self) -> None:
        self.ttft = _sharer()
        self.server_usd = _sharer()
        self.device_j = _sharer()
        self.unified = _sharer()
        self.spend = _sharer()
        self.ceiling = _sharer()


class _Answer(NamedTuple):
    """When the answer and its winner's stream end, and what the request cost."""

    done: float
    """When the answer is complete (absolute): the last token generated and delivered."""
    winner_end: float
    """When the winner's stream stopped (relative to arrival)."""
    winner_leave: float
    winner_tokens: int
    cost: Cost

    @classmethod
    def of(
        cls, t: float, o: int, res: Resolution, gap: float, play: Playout | None, *, paced: bool
    ) -> _Answer:
        done = t + res.ttft_s + (o - 1) * gap
        if play is not None and (play.migrated or paced):
            # The answer ends with its last delivery; the winner with its last token.
            end = t + max(play.generation_end_s, play.delivered.last_s)
            stop = play.source_stop_s
            return cls(end, stop, t + stop, play.source_tokens, play.cost)
        return cls(done, done - t, done, o, res.cost)


class _TraceReplay:
    """One replay: the virtual clock, the device queues and the feedback heap."""

    def __init__(
        self,
        sim: Simulator,
        policy: DispatchPolicy,
        budget: Budget | None,
        profiles: Profiles | None,
        migration: MigrationPolicy | None = None,
        pace_tok_s: float | None = None,
    ) -> None:
        cfg = sim.config
        self.sim = sim
        self.policy = policy
        self.budget = budget
        self.migration = migration
        self.pace_tok_s = pace_tok_s
        self.streaming = migration is not None or pace_tok_s is not None
        self.profiles = profiles or _priors(cfg)
        self.ctx = DispatchContext(self.profiles, cfg.cost_model)
        n = len(sim.trace)
        self.free_at = [0.0] * sim.n_devices
        self.jobs: list[list[_Occupancy]] = [[] for _ in range(sim.n_devices)]
        self.pending: list[tuple[float, int, int, RequestFeatures, Plan]] = []
        self.feedback: list[tuple[float, int, RequestOutcome]] = []
        self.busy_s = 0.0
        self.ttft = [0.0] * n
        self.tbt = [0.0] * n
        self.server_usd = [0.0] * n
        self.device_j = [0.0] * n
        self.unified = [0.0] * n
        self.spend = [0.0] * n
        self.floor = [0.0] * n
        self.ceiling = [0.0] * n
        self.winner = [""] * n
        self.action = [""] * n
        self.predictor = ProfileMigrationPredictor(self.profiles)
        self.stall = StallDetector()
        """One per replay, as the live model keeps one: it learns each side's token gaps."""
        self.migrated = [False] * n
        self.migration_token: list[int | None] = [None] * n
        self.stall_added = [0.0] * n
        self.blocked_by: list[str | None] = [None] * n
        self.local_tokens = [0] * n
        self.remote_tokens = [0] * n
        self.cost_without = [0.0] * n
        self.tbt_runs: list[tuple[GapRun, ...]] = [()] * n
        self.shared_runs: dict[tuple[GapRun, ...], tuple[GapRun, ...]] = {}
        self.share = _Sharers()
        self.device_gap: dict[float, float] = {}
        """1 / decode rate, per measured rate (the gap of a device answer)."""
        self.first_migration: MigratedStream | None = None
        self.caches = caches = sim.caches
        self.prefill_now = sim.prefill_s
        """Per request, the device prefill it is run with (its uncached tokens' once cached)."""
        self.server_now = sim.server_ttft_s
        """Per request, the server TTFT it is run with (shorter for a cached prefix)."""
        self.device_cached: list[int] = []
        self.server_cached: list[int] = []
        self.device_blocks: list[int] = []
        if caches is not None:
            block = sim.trace.block_tokens
            self.device_caches = [caches.device_cache(block) for _ in range(sim.n_devices)]
            self.server_cache = caches.server_cache(block)
            self.prefill_now = list(sim.prefill_s)
            self.server_now = list(sim.server_ttft_s)
            self.device_cached = [0] * n
            self.server_cached = [0] * n
            self.device_blocks = [0] * n

    def _look_up(self, i: int, k: int, t: float) -> tuple[float, float, int, int]:
        """Request `i` on device `k` at `t`, against the caches: (device prefill, server TTFT,
        server cached tokens, device tokens to prefill)."""
        sim, caches = self.sim, self.caches
        assert caches is not None and sim.trace.hash_ids is not None
        trace, blocks = sim.trace, sim.trace.hash_ids[i]
        held = self.device_caches[k].lookup(blocks)
        self.device_blocks[i] = held
        self.device_cached[i] = cached = trace.shared_tokens(i, held)
        self.prefill_now[i] = prefill_s = sim.device_prefill_s(i, cached)
        prompt = trace.prompt_tokens[i]
        server_cached = trace.shared_tokens(i, self.server_cache.lookup(blocks, t))
        self.server_cached[i] = server_cached
        self.server_now[i] = server_s = caches.server_ttft_s(
            sim.server_ttft_s[i], server_cached, prompt
        )
        return prefill_s, server_s, server_cached, prompt - cached

    def _server_at(self, i: int, plan: Plan, t: float) -> int:
        """The server's cached tokens of request `i` when its plan starts the server."""
        sim, caches = self.sim, self.caches
        assert caches is not None and sim.trace.hash_ids is not None
        at = plan.remote_at_s
        if at is None or at == 0.0:
            return self.server_cached[i]
        cached = sim.trace.shared_tokens(i, self.server_cache.lookup(sim.trace.hash_ids[i], t + at))
        self.server_cached[i] = cached
        self.server_now[i] = caches.server_ttft_s(
            sim.server_ttft_s[i], cached, sim.trace.prompt_tokens[i]
        )
        return cached

    def _remember(self, i: int, plan: Plan, res: Resolution, local_begin: float) -> None:
        """What each side now holds of request `i`'s prompt: the blocks the device evaluated
        (all of them, or those a lost race's prefill reached) and, if it was sent, the server."""
        sim = self.sim
        assert sim.trace.hash_ids is not None
        blocks, t = sim.trace.hash_ids[i], sim.trace.arrival_s[i]
        if res.local_started:
            held = self.device_blocks[i]
            if res.winner == "local":
                ran = 1.0
            else:
                ran = min(max((res.ttft_s - local_begin) / self.prefill_now[i], 0.0), 1.0)
                if ran > 0 and not sim.config.device_prefill_interruptible:
                    ran = 1.0
            upto = held + int(ran * (len(blocks) - held))
            if upto > held:
                self.device_caches[sim.assignment[i]].store(blocks[:upto])
        if res.remote_started:
            self.server_cache.store(blocks, t + (plan.remote_at_s or 0.0))

    def execute(self) -> SimResult:
        sim, trace = self.sim, self.sim.trace
        cfg = sim.config
        cm = cfg.cost_model
        budget = self.budget
        arrivals, prompts, outputs = trace.arrival_s, trace.prompt_tokens, trace.output_tokens
        assignment, server_ttft, prefill = sim.assignment, sim.server_ttft_s, sim.prefill_s
        max_tokens, interruptible = cfg.max_tokens, cfg.device_prefill_interruptible
        pending, feedback, devices, free_at = self.pending, self.feedback, self.jobs, self.free_at
        profiles, policy, ctx = self.profiles, self.policy, self.ctx
        floors, ceilings, share_ceiling = self.floor, self.ceiling, self.share.ceiling
        floor_of: dict[tuple[int, int], float] = {}
        """Floors by (prompt, answer) tokens: a tiled trace repeats them (bounded, for one that
        does not)."""
        caches, look_up = self.caches, self._look_up
        aware = caches is not None and caches.aware
        heappop, heappush, finish, hedge = heapq.heappop, heapq.heappush, self._finish, self._hedge
        for i in range(len(trace)):
            t = arrivals[i]
            while pending and pending[0][0] <= t:
                hedge(heappop(pending))
            while feedback and feedback[0][0] <= t:
                outcome = heappop(feedback)[2]
                profiles.observe(outcome)
                policy.observe(outcome)
            k = assignment[i]
            jobs = devices[k]
            wait_s = 0.0  # what `predict_queue_wait_s` says of an empty device
            if jobs:
                jobs = [job for job in jobs if job.leave > t]
                devices[k] = jobs
                if jobs:
                    wait_s = predict_queue_wait_s(
                        (job.state(t) for job in jobs), profiles.device, profiles.output_lengths
                    )
            prompt, o = prompts[i], outputs[i]
            if caches is None:
                features = RequestFeatures.of(prompt, max_tokens, len(jobs), wait_s)
                prefill_s, server_s, server_cached, device_in = prefill[i], server_ttft[i], 0, None
            else:
                prefill_s, server_s, server_cached, device_in = look_up(i, k, t)
                seen = self.device_cached[i] if aware else 0
                features = RequestFeatures.of(prompt, max_tokens, len(jobs), wait_s, None, seen)
            plan = policy.plan(features, ctx)
            queue_s = max(free_at[k] - t, 0.0)
            if budget is not None:
                race = resolve_action(
                    RACE,
                    server_ttft_s=server_s,
                    local_begin_s=queue_s,
                    prefill_s=prefill_s,
                    prompt_tokens=prompt,
                    output_tokens=o,
                    cost_model=cm,
                    prefill_interruptible=interruptible,
                    device_prompt_tokens=device_in,
                    server_cached_tokens=server_cached,
                )
                key = (prompt, o)
                floor = floor_of.get(key)
                if floor is None:
                    floor = budget.floor(prompt, o, cm)
                    if len(floor_of) < _CACHE_SIZE:
                        floor_of[key] = floor
                floors[i] = floor
                ceilings[i] = share_ceiling(max(budget.spend(race.cost), floor))
            wait = plan.local_at_s
            if wait is None or wait == 0.0 or server_s < wait:
                finish(i, features, plan, max(wait or 0.0, queue_s))
            else:  # the device hedge fires later: queue it in time order
                heappush(pending, (t + wait, i, i, features, plan))
        while pending:
            hedge(heappop(pending))
        return self._result(trace)

    def _hedge(self, item: tuple[float, int, int, RequestFeatures, Plan]) -> None:
        at, _, i, features, plan = item
        t = self.sim.trace.arrival_s[i]
        k = self.sim.assignment[i]
        begin = max(at, self.free_at[k]) - t
        self._finish(i, features, plan, begin)

    def _finish(self, i: int, features: RequestFeatures, plan: Plan, local_begin: float) -> None:
        sim = self.sim
        cfg, trace = sim.config, sim.trace
        t = trace.arrival_s[i]
        o = trace.output_tokens[i]
        caches = self.caches
        server_cached, device_in = 0, None
        if caches is not None:
            server_cached = self._server_at(i, plan, t)
            device_in = trace.prompt_tokens[i] - self.device_cached[i]
        res = resolve_action(
            plan,
            server_ttft_s=self.server_now[i],
            local_begin_s=local_begin,
            prefill_s=self.prefill_now[i],
            prompt_tokens=trace.prompt_tokens[i],
            output_tokens=o,
            cost_model=cfg.cost_model,
            prefill_interruptible=cfg.device_prefill_interruptible,
            device_prompt_tokens=device_in,
            server_cached_tokens=server_cached,
        )
        if caches is not None:
            self._remember(i, plan, res, local_begin)
        winner = res.winner
        if winner == "local":
            decode = sim.device_decode_tok_s[i]
            gap = self.device_gap.get(decode)
            if gap is None:
                gap = self.device_gap[decode] = 1.0 / decode
        else:
            gap = sim.server_gap_s[i]
        play, target_begin = self._play(i, features, res, gap) if self.streaming else (None, None)
        answer = _Answer.of(t, o, res, gap, play, paced=self.pace_tok_s is not None)
        report = RequestReport(
            plan.action, plan.reason, winner=winner, ttft_s=res.ttft_s, cost=answer.cost
        )
        runs = report.endpoints
        if res.local_started:
            runs["local"] = self._book_local(i, plan, res, answer, local_begin)
        if res.remote_started:
            runs["remote"] = self._remote_run(i, plan, res, answer)
        runs[winner].delivered_chunks = o
        if play is not None and target_begin is not None and play.target_end_s is not None:
            k = sim.assignment[i]
            self._occupy_for_target(k, t, play, target_begin, sim.device_decode_tok_s[i])
        outcome = report.outcome(features, plan)
        heapq.heappush(self.feedback, (answer.done, i, outcome))
        self._record(i, plan, res, gap, answer.cost, play)

    def _book_local(
        self, i: int, plan: Plan, res: Resolution, answer: _Answer, local_begin: float
    ) -> EndpointRun:
        """Reserve the device for the request's own device run; what it did, for learning."""
        sim = self.sim
        t, k = sim.trace.arrival_s[i], sim.assignment[i]
        prompt, decode = sim.trace.prompt_tokens[i], sim.device_decode_tok_s[i]
        local_wins = res.winner == "local"
        started = plan.local_at_s or 0.0
        leave = answer.winner_leave if local_wins else t + res.local_end_s
        interruptible = sim.config.device_prefill_interruptible
        if not (local_wins or interruptible) and local_begin < res.ttft_s:
            # Cancelled inside its prefill: the device is busy until that prefill ends.
            leave = max(leave, t + local_begin + self.prefill_now[i])
        begin_abs = t + local_begin
        if leave > begin_abs:
            self.free_at[k] = max(self.free_at[k], leave)
            self.busy_s += leave - begin_abs
        first = t + res.ttft_s if local_wins else math.inf
        self.jobs[k].append(_Occupancy(prompt, t + started, leave, begin_abs, first, decode))
        return EndpointRun(
            "local",
            "local",
            sim.device.name,
            outcome="completed" if local_wins else "cancelled",
            started_s=started,
            first_token_s=res.ttft_s if local_wins else None,
            ended_s=answer.winner_end if local_wins else res.local_end_s,
            queue_wait_s=local_begin - started,
            input_tokens=prompt,
            output_tokens=answer.winner_tokens if local_wins else 0,
            # Cache-blind dispatch does not know what the KV cache held: it learns the prompt.
            cached_input_tokens=self.device_cached[i]
            if self.caches is not None and self.caches.aware
            else 0,
        )

    def _remote_run(self, i: int, plan: Plan, res: Resolution, answer: _Answer) -> EndpointRun:
        remote_wins = res.winner == "remote"
        return EndpointRun(
            "remote",
            "remote",
            self.sim.config.server,
            outcome="completed" if remote_wins else "cancelled",
            started_s=plan.remote_at_s or 0.0,
            first_token_s=res.ttft_s if remote_wins else None,
            ended_s=answer.winner_end if remote_wins else res.remote_end_s,
            input_tokens=self.sim.trace.prompt_tokens[i],
            output_tokens=answer.winner_tokens if remote_wins else 0,
            cached_input_tokens=self.server_cached[i] if self.caches is not None else 0,
        )

    def _record(
        self, i: int, plan: Plan, res: Resolution, gap: float, cost: Cost, play: Playout | None
    ) -> None:
        """Keep request `i`'s figures for the run's result."""
        o = self.sim.trace.output_tokens[i]
        share = self.share
        self.ttft[i] = share.ttft(res.ttft_s)
        self.tbt[i] = gap
        self.server_usd[i] = share.server_usd(cost.server_usd)
        self.device_j[i] = share.device_j(cost.device_j)
        self.unified[i] = unified = share.unified(cost.unified_usd)
        without = res.cost.unified_usd
        self.cost_without[i] = unified if without is cost.unified_usd else share.unified(without)
        if self.budget is not None:
            self.spend[i] = share.spend(self.budget.spend(cost))
        self.winner[i] = res.winner
        self.action[i] = plan.action
        source_tokens, target_tokens = o, 0
        if play is None:
            if o <= 1:
                self.tbt_runs[i] = ()
            elif type(gap) is float and gap:
                # The same (gap, count) run recurs (a tiled trace, the same measured gaps):
                # equal runs share one tuple (see `_sharer` for why not zeros or non-floats).
                runs: tuple[GapRun, ...] = ((gap, o - 1),)
                shared = self.shared_runs
                known = shared.get(runs)
                if known is not None:
                    runs = known
                elif len(shared) < _CACHE_SIZE:
                    shared[runs] = runs
                self.tbt_runs[i] = runs
            else:
                self.tbt_runs[i] = ((gap, o - 1),)
        else:
            self._record_playout(i, res, play)
            source_tokens, target_tokens = play.source_tokens, play.target_tokens
        if res.winner == "local":
            self.local_tokens[i], self.remote_tokens[i] = source_tokens, target_tokens
        else:
            self.local_tokens[i], self.remote_tokens[i] = target_tokens, source_tokens

    def _record_playout(self, i: int, res: Resolution, play: Playout) -> None:
        runs = play.delivered.runs
        self.tbt_runs[i] = runs
        if len(runs) == 1:
            self.tbt[i] = runs[0][0]
        elif runs:
            self.tbt[i] = sum(g * c for g, c in runs) / sum(c for _, c in runs)
        self.migrated[i] = play.migrated
        if play.migrated and (self.first_migration is None or i < self.first_migration.index):
            target: Role = "remote" if res.winner == "local" else "local"
            prompt = self.sim.trace.prompt_tokens[i]
            self.first_migration = MigratedStream(
                i, prompt, res.winner, target, self.pace_tok_s, play
            )
        self.migration_token[i] = play.token_index
        self.stall_added[i] = play.stall_added_s
        self.blocked_by[i] = play.blocked_by

    def _play(
        self, i: int, features: RequestFeatures, res: Resolution, source_gap_s: float
    ) -> tuple[Playout, float | None]:
        """Play the answer out after its first token: the delivery closed form when no policy
        can move it, else through the engine core, which asks the policy token by token
        (`sim.streaming`).

        Returns the playout and, for a device target, when its prefill (or probe) can begin.
        Nothing is reserved here: `_finish` books the winner first, then the target.
        """
        sim, cm = self.sim, self.sim.config.cost_model
        t = sim.trace.arrival_s[i]
        prompt, o = sim.trace.prompt_tokens[i], sim.trace.output_tokens[i]
        source: Role = res.winner
        target: Role = "remote" if source == "local" else "local"
        stay = unmoved(
            first_token_s=res.ttft_s,
            source_gap_s=source_gap_s,
            output_tokens=o,
            pace_tok_s=self.pace_tok_s,
            cost=res.cost,
        )
        if self.migration is None or isinstance(self.migration, NoMigration):
            return stay, None  # nothing can move it: the closed form is the core's answer
        k = sim.assignment[i]
        queue = 0.0
        if target == "local":
            queue = features.local_queue_wait_s
        ratio = sim.prefill_s[i] / sim.device.mean_prefill_s(prompt)
        decode_gap = 1.0 / sim.device_decode_tok_s[i]
        free_at = self.free_at[k]
        first = Opening(res.ttft_s, source_gap_s, prompt)
        device = DeviceScript(
            first if source == "local" else None,
            overhead_s=sim.device.overhead_s * ratio,
            s_per_token=sim.device.s_per_token * ratio,
            gap_s=decode_gap,
            free_at=lambda start: free_at - t,
        )
        server = ServerScript(
            first if source == "remote" else None,
            sim.continuation_ttft_s[i],
            sim.continuation_gap_s[i],
        )
        request = StreamedRequest(
            source=source,
            prompt_tokens=prompt,
            output_tokens=o,
            max_tokens=sim.config.max_tokens,
            source_gap_s=source_gap_s,
            target_can_continue=sim.config.remote_exact_continuation
            if target == "remote"
            else True,
            target_queue_wait_s=queue,
        )
        playout, _, _ = play(
            request,
            device,
            server,
            migration=self.migration,
            pace_tok_s=self.pace_tok_s,
            predictor=self.predictor,
            stall=self.stall,
            cost_model=cm,
            base_cost=res.cost,
        )
        begin = None
        if target == "local" and playout.target_start_s is not None:
            begin = max(t + playout.target_start_s, free_at)
        return playout, begin

    def _occupy_for_target(
        self, k: int, t: float, play: Playout, begin_abs: float, decode: float
    ) -> None:
        """Book device `k` for a migration (or probe) target, after the winner's booking."""
        assert play.target_start_s is not None and play.target_end_s is not None
        leave = t + play.target_end_s
        begin_abs = max(begin_abs, self.free_at[k])
        if leave > begin_abs:
            self.free_at[k] = max(self.free_at[k], leave)
            self.busy_s += leave - begin_abs
        first = play.target_first_token_s
        self.jobs[k].append(
            _Occupancy(
                play.target_context_tokens,
                t + play.target_start_s,
                leave,
                begin_abs,
                t + first if first is not None and play.migrated else math.inf,
                decode,
            )
        )

    def _result(self, trace: Trace) -> SimResult:
        span = max(trace.span_s, 1e-9)
        metrics = summarize(
            ttft_s=self.ttft,
            tbt_s=self.tbt,
            output_tokens=trace.output_tokens,
            unified_usd=self.unified,
            server_usd=self.server_usd,
            device_j=self.device_j,
            spend=self.spend,
            floor=self.floor,
            ceiling=self.ceiling,
            device_utilisation=self.busy_s / (self.sim.n_devices * span),
            tbt_runs=self.tbt_runs if self.streaming else None,
            migrated=self.migrated,
            stall_added_s=self.stall_added,
            cost_without_migration_usd=self.cost_without,
        )
        return SimResult(
            policy=self.policy.name,
            metrics=metrics,
            ttft_s=self.ttft,
            tbt_s=self.tbt,
            server_usd=self.server_usd,
            device_j=self.device_j,
            unified_usd=self.unified,
            spend=self.spend,
            floor=self.floor,
            ceiling=self.ceiling,
            winner=self.winner,
            action=self.action,
            migrated=self.migrated,
            migration_token=self.migration_token,
            stall_added_s=self.stall_added,
            migration_blocked_by=self.blocked_by,
            local_tokens=self.local_tokens,
            remote_tokens=self.remote_tokens,
            cost_without_migration_usd=self.cost_without,
            tbt_runs=self.tbt_runs,
            first_migration=self.first_migration,
            device_cached_tokens=self.device_cached,
            server_cached_tokens=self.server_cached,
        )
