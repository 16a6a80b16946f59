"""`disco bench sim`: every dispatch policy on a trace, at every budget, against the oracle.

A *regime* fixes which measured device and hosted API are simulated, the cost model and the
resource the budget limits (docs/concepts.md, Budget):

- `server-constrained`: MacBook Pro M1 Max + together-13b, default prices (device energy nearly
  free), budget on server USD; the paper's policy there is the length threshold;
- `device-constrained`: Galaxy S25 + replicate-70b, battery valued at 1e-4 USD/J, budget on
  device joules; the paper's policy there is the wait time;
- `mixed`: 2-core x86 VM (Gemma 3 270M) + together-13b, 1e-5 USD/J so that a request costs
  about the same on either side, budget on unified cost.

Every policy runs on the same requests and the same latency draws (one `Simulator` per seed).
The baselines `local`, `remote` and `race` do not depend on the budget's share, so they run
once per seed and are reported at every budget. Per policy and budget the metrics are computed
over the requests of all seeds pooled; the oracle's mean and p99 are averaged over seeds.
"""

from __future__ import annotations

import concurrent.futures
import copy
import math
import multiprocessing
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from langchain_disco.bench._profiles_view import load_profiles
from langchain_disco.bench._sim_options import (
    ALL_POLICIES,
    BASELINES,
    ORACLE,
    REGIMES,
    TOLERANCE,
    Regime,
    SimOptions,
    load_bench_trace,
    parse_budgets,
    parse_policies,
    parse_seeds,
)
from langchain_disco.errors import ConfigError
from langchain_disco.scheduling import Budget, policy_from_name
from langchain_disco.scheduling.migration import CostAwareMigration
from langchain_disco.sim import (
    OracleResult,
    RunMetrics,
    SimResult,
    Simulator,
    Trace,
    ratio,
    summarize,
)
from langchain_disco.sim.queue_bound import QueueBound, hindsight_queue_bound
from langchain_disco.sim.timeline import MigratedStream

__all__ = [
    "ALL_POLICIES",
    "BASELINES",
    "ORACLE",
    "REGIMES",
    "TOLERANCE",
    "Regime",
    "Row",
    "SimBenchResult",
    "SimOptions",
    "StreamExample",
    "load_bench_trace",
    "parse_budgets",
    "parse_policies",
    "parse_seeds",
    "run_sim",
]


# -- results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One policy at one budget: the run metrics (docs/concepts.md, Metrics), and ratios on the
    same requests.

    Ratios are policy / reference (below 1: lower, i.e. faster). *single* is one endpoint
    alone: of device-only and server-only, among those whose realised share fits the budget,
    the one with the better mean TTFT, its mean and its p99 (NaN when neither fits); *oracle*
    is the hindsight bound: for the mean, the queue-aware bound (`sim.queue_bound`: no
    first-come-first-served dispatch within the spend this run was allowed has a lower mean
    TTFT); for the p99, the oracle without device queueing. The oracle's own row has only its
    mean (the queue-aware bound at the budget's allowance without queueing) and its p99 (NaN
    elsewhere).
    """

    budget: float
    policy: str
    n: int
    mean_ttft_s: float
    p50_ttft_s: float
    p90_ttft_s: float
    p99_ttft_s: float
    mean_tbt_s: float
    p99_tbt_s: float
    max_stall_s: float
    mean_cost_usd: float
    mean_server_usd: float
    mean_device_j: float
    realised_share: float
    device_utilisation: float
    migration_rate: float
    """Share of requests whose generation moved to the other endpoint (0 without migration)."""
    mean_cost_without_migration_usd: float
    """Unified cost per request had each winner generated its whole answer (same dispatch)."""
    mean_vs_single: float
    p99_vs_single: float
    mean_vs_oracle: float
    p99_vs_oracle: float

    @property
    def on_budget(self) -> bool | None:
        """Whether the realised share is within `TOLERANCE` of the budget (None: no share)."""
        if math.isnan(self.realised_share):
            return None
        if self.budget == 0:
            return self.realised_share <= 1e-9
        return abs(self.realised_share / self.budget - 1) <= TOLERANCE

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StreamExample:
    """One migrated answer of the run, drawn token by token (`_plots.plot_token_timeline`)."""

    policy: str
    seed: int
    budget: float
    stream: MigratedStream


@dataclass
class SimBenchResult:
    """Everything one `disco bench sim` run measured."""

    options: SimOptions
    trace_name: str
    n_requests: int
    trace_span_s: float
    n_devices: dict[int, int]
    """Simulated devices per seed (sized for 30% device-only utilisation)."""
    rows: list[Row]
    cdf_ttft_s: dict[str, list[float]]
    """Pooled per-request TTFTs of each requested policy at `options.cdf_at`."""
    wall_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    migrated_example: StreamExample | None = None
    """With migration: the first migrated request of the first policy (in `options.policies`
    order) that migrated any, at the CDF budget and the first seed; None if none did."""

    def rows_at(self, budget: float) -> list[Row]:
        return [r for r in self.rows if r.budget == budget]

    def row(self, policy: str, budget: float) -> Row | None:
        return next((r for r in self.rows if r.policy == policy and r.budget == budget), None)

    def to_json(self) -> dict[str, Any]:
        o = self.options
        regime = o.regime_spec
        data: dict[str, Any] = _finite(
            {
                "options": {
                    "trace": str(o.trace) if o.trace else None,
                    "requests": o.requests,
                    "regime": o.regime,
                    "device": o.device_name,
                    "server": o.server_name,
                    "device_prior": o.device_prior or o.device_name,
                    "server_prior": o.server_prior or o.server_name,
                    "budget_resource": regime.resource,
                    "cost_model": asdict(regime.cost_model),
                    "budgets": list(o.budgets),
                    "policies": list(o.policies),
                    "seeds": list(o.seeds),
                    "cdf_budget": o.cdf_at,
                    "migration": "cost" if o.migration else "off",
                    "pace_tok_s": o.pace_tok_s,
                    "profiles": str(o.profiles) if o.profiles else None,
                    "command": o.command(),
                },
                "trace": {
                    "name": self.trace_name,
                    "requests": self.n_requests,
                    "span_s": self.trace_span_s,
                },
                "n_devices": {str(k): v for k, v in self.n_devices.items()},
                "wall_s": self.wall_s,
                "notes": self.notes,
                "rows": [r.to_dict() for r in self.rows],
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


# -- running ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Task:
    seed: int
    policy: str
    budget: float | None
    """None for a baseline (its plans ignore the share)."""


class _Runner:
    """Runs tasks on one simulator per seed (built on first use, then reused)."""

    def __init__(self, trace: Trace, options: SimOptions) -> None:
        self.trace = trace
        self.options = options
        self._sims: dict[int, Simulator] = {}
        self._profiles = load_profiles(options.profiles, "--profiles") if options.profiles else None

    def sim(self, seed: int) -> Simulator:
        if seed not in self._sims:
            config = self.options.sim_config(seed)
            sim = Simulator(self.trace, config)
            if sim.n_devices > len(self.trace):
                # A burst (arrivals closer than a device takes per request): round-robin gives
                # every request a device of its own with any count >= the number of requests.
                sim = Simulator(self.trace, replace(config, n_devices=len(self.trace)))
            self._sims[seed] = sim
        return self._sims[seed]

    def execute(self, task: _Task) -> _Done:
        resource = self.options.regime_spec.resource
        sim = self.sim(task.seed)
        share = 0.5 if task.budget is None else task.budget
        budget = Budget(share=share, resource=resource)
        if task.policy == ORACLE:
            oracle = sim.oracle(budget)
            return _Done(oracle, hindsight_queue_bound(sim, budget, oracle.spend_limit))
        # Every run starts from the same knowledge: a fresh copy of the given profiles.
        profiles = copy.deepcopy(self._profiles) if self._profiles is not None else None
        policy = policy_from_name(task.policy, budget, seed=task.seed)
        if self.options.migration or self.options.pace_tok_s is not None:
            migration = CostAwareMigration() if self.options.migration else None
            result = sim.run(
                policy,
                budget,
                profiles=profiles,
                migration=migration,
                pace_tok_s=self.options.pace_tok_s,
            )
        else:
            result = sim.run(policy, budget, profiles=profiles)
        result.winner, result.action = [], []  # not reported; keeps what crosses processes small
        bound = None
        if self.options.references and task.budget is not None:
            # The limit for this run: the allowance it was given, with its own ceilings.
            pairs = zip(result.floor, result.ceiling, strict=True)
            allowed = sum(budget.allowance(f, c) for f, c in pairs)
            bound = hindsight_queue_bound(sim, budget, allowed)
        return _Done(result, bound)


@dataclass(frozen=True)
class _Done:
    """What one task produced: a replay or the oracle, and the queue-aware bound at the
    allowance it had (None for a baseline or without references)."""

    result: SimResult | OracleResult
    bound: QueueBound | None = None


_WORKER: _Runner | None = None


def _init_worker(trace: Trace, options: SimOptions) -> None:
    global _WORKER
    _WORKER = _Runner(trace, options)


def _execute_in_worker(task: _Task) -> _Done:
    assert _WORKER is not None, "worker not initialised"
    return _WORKER.execute(task)


_COST_ORDER = {"generalized": 0, "wait_time": 1, "length_threshold": 2, ORACLE: 9}


def _tasks(options: SimOptions) -> list[_Task]:
    """Every run needed: the requested policies, plus (unless told not to) local, remote and
    the oracle for the ratios."""
    wanted = set(options.policies)
    if options.references:
        wanted |= {"local", "remote", ORACLE}
    tasks: list[_Task] = []
    for seed in options.seeds:
        for name in ALL_POLICIES:
            if name not in wanted:
                continue
            if name in BASELINES:
                tasks.append(_Task(seed, name, None))
            else:
                tasks.extend(_Task(seed, name, b) for b in options.budgets)
    # Longest first, so that parallel workers finish together.
    return sorted(tasks, key=lambda t: _COST_ORDER.get(t.policy, 5))


Progress = Callable[[int, int], None]
"""Called with (runs done, runs in total) after each run."""


def run_sim(
    options: SimOptions,
    *,
    trace: Trace | None = None,
    progress: Progress | None = None,
    jobs: int = 1,
) -> SimBenchResult:
    """Run every requested policy at every budget (and the references the ratios need)."""
    options.validate()
    if jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {jobs}")
    start = time.perf_counter()
    notes: list[str] = []
    if trace is None:
        trace = load_bench_trace(options.trace, options.requests, options.scale_lengths)
    if len(trace) < options.requests:
        notes.append(
            f"the trace has {len(trace):,} requests, fewer than --requests "
            f"{options.requests:,}: all of them were replayed"
        )
    if trace.has_prefixes:
        notes.append(
            f"multi-turn trace: {options.cache_label()}; the oracle and bound assume each side "
            "held every earlier prefix it could have (no eviction, no expiry)"
        )
    tasks = _tasks(options)
    results: dict[_Task, _Done] = {}
    runner = _Runner(trace, options)
    n_devices = {seed: runner.sim(seed).n_devices for seed in options.seeds}
    if trace.span_s <= 0 and len(trace) > 1:
        notes.append(
            "every request arrives at the same time: each gets a device of its own, and the "
            "device utilisation is not meaningful"
        )
    if progress is not None:
        progress(0, len(tasks))
    if jobs == 1:
        for task in tasks:
            results[task] = runner.execute(task)
            if progress is not None:
                progress(len(results), len(tasks))
    else:
        # spawn, not fork: the caller may run threads (a progress bar) that fork would copy.
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(
            max_workers=jobs,
            mp_context=context,
            initializer=_init_worker,
            initargs=(trace, options),
        ) as pool:
            futures = {pool.submit(_execute_in_worker, task): task for task in tasks}
            for future in concurrent.futures.as_completed(futures):
                results[futures[future]] = future.result()
                if progress is not None:
                    progress(len(results), len(tasks))
    rows, cdf = _assemble(options, trace, results)
    example = _migrated_example(options, results)
    if options.migration and example is None:
        notes.append(
            f"no request migrated at b={options.cdf_at:g} (seed {options.seeds[0]}): "
            "no token timeline plot"
        )
    return SimBenchResult(
        options=options,
        trace_name=trace.name,
        n_requests=len(trace),
        trace_span_s=trace.span_s,
        n_devices=n_devices,
        rows=rows,
        cdf_ttft_s=cdf,
        wall_s=time.perf_counter() - start,
        notes=notes,
        migrated_example=example,
    )


def _migrated_example(options: SimOptions, results: dict[_Task, _Done]) -> StreamExample | None:
    """The stream `SimBenchResult.migrated_example` describes."""
    b, seed = options.cdf_at, options.seeds[0]
    for name in options.policies:
        if name == ORACLE:
            continue
        done = results.get(_Task(seed, name, None if name in BASELINES else b))
        result = done.result if done is not None else None
        if isinstance(result, SimResult) and result.first_migration is not None:
            return StreamExample(name, seed, b, result.first_migration)
    return None


def _pool(runs: Sequence[SimResult], output_tokens: Sequence[int]) -> RunMetrics:
    """One policy's metrics over the requests of every seed."""

    def cat(attr: str) -> list[Any]:
        return [x for r in runs for x in getattr(r, attr)]

    # Per-request gap runs, migrations and costs without migration, when the simulator reports
    # them (paced delivery and migration give a request more than one gap).
    detailed = all(r.tbt_runs for r in runs)
    return summarize(
        ttft_s=cat("ttft_s"),
        tbt_s=cat("tbt_s"),
        output_tokens=list(output_tokens) * len(runs),
        unified_usd=cat("unified_usd"),
        server_usd=cat("server_usd"),
        device_j=cat("device_j"),
        spend=cat("spend"),
        floor=cat("floor"),
        ceiling=cat("ceiling"),
        device_utilisation=sum(r.metrics.device_utilisation for r in runs) / len(runs),
        tbt_runs=cat("tbt_runs") if detailed else None,
        migrated=cat("migrated") if detailed else None,
        stall_added_s=cat("stall_added_s") if detailed else None,
        cost_without_migration_usd=cat("cost_without_migration_usd") if detailed else None,
    )


def _oracle_row(
    b: float, n: int, mean_s: float, p99_s: float, mean_vs_single: float, p99_vs_single: float
) -> Row:
    fields: dict[str, Any] = dict.fromkeys(Row.__dataclass_fields__, math.nan)
    fields.update(
        budget=b,
        policy=ORACLE,
        n=n,
        mean_ttft_s=mean_s,
        p99_ttft_s=p99_s,
        mean_vs_single=mean_vs_single,
        p99_vs_single=p99_vs_single,
        mean_vs_oracle=1.0,
        p99_vs_oracle=1.0,
    )
    return Row(**fields)


def _fits(m: RunMetrics, b: float) -> bool:
    return m.realised_share <= b * (1 + TOLERANCE) + 1e-9


def _single_reference(singles: list[RunMetrics], b: float) -> tuple[float, float]:
    """The mean and p99 TTFT of one endpoint alone: of device-only and server-only, those whose
    realised share fits budget `b`, the one with the better mean (both figures are that one
    endpoint's: the better mean and the better p99 of two endpoints describe no real run).
    NaN when neither fits."""
    feasible = [m for m in singles if _fits(m, b)]
    if not feasible:
        return math.nan, math.nan
    best = min(feasible, key=lambda m: (m.mean_ttft_s, m.p99_ttft_s))
    return best.mean_ttft_s, best.p99_ttft_s


def _assemble(
    options: SimOptions, trace: Trace, results: dict[_Task, _Done]
) -> tuple[list[Row], dict[str, list[float]]]:
    seeds = options.seeds

    def runs(policy: str, b: float | None) -> list[SimResult]:
        out = [results[_Task(s, policy, b)].result for s in seeds]
        return [r for r in out if isinstance(r, SimResult)]

    def oracles(b: float) -> list[OracleResult]:
        out = [results.get(_Task(s, ORACLE, b)) for s in seeds]
        return [d.result for d in out if d is not None and isinstance(d.result, OracleResult)]

    def bound_mean(policy: str, b: float) -> float:
        """The queue-aware bound's mean TTFT at this run's allowance, averaged over seeds."""
        found = [results.get(_Task(s, policy, b)) for s in seeds]
        means = [d.bound.mean_ttft_s for d in found if d is not None and d.bound is not None]
        return sum(means) / len(means) if len(means) == len(seeds) else math.nan

    pooled: dict[tuple[str, float | None], RunMetrics] = {}
    for task in results:
        if task.policy != ORACLE and (task.policy, task.budget) not in pooled:
            pooled[task.policy, task.budget] = _pool(
                runs(task.policy, task.budget), trace.output_tokens
            )
    rows: list[Row] = []
    cdf: dict[str, list[float]] = {}
    for b in options.budgets:
        found = oracles(b)
        oracle_mean = bound_mean(ORACLE, b) if found else math.nan
        oracle_p99 = sum(o.p99_ttft_s for o in found) / len(found) if found else math.nan
        singles = [pooled[e, None] for e in ("local", "remote") if (e, None) in pooled]
        single_mean, single_p99 = (
            _single_reference(singles, b) if len(singles) == 2 else (math.nan, math.nan)
        )
        for name in options.policies:
            if name == ORACLE:
                rows.append(
                    _oracle_row(
                        b,
                        len(trace) * len(seeds),
                        oracle_mean,
                        oracle_p99,
                        ratio(oracle_mean, single_mean),
                        ratio(oracle_p99, single_p99),
                    )
                )
                if b == options.cdf_at:
                    cdf[ORACLE] = [t for o in found for t in o.ttft_s]
                continue
            key = b if name not in BASELINES else None
            m = pooled[name, key]
            rows.append(
                Row(
                    budget=b,
                    policy=name,
                    n=m.n,
                    mean_ttft_s=m.mean_ttft_s,
                    p50_ttft_s=m.p50_ttft_s,
                    p90_ttft_s=m.p90_ttft_s,
                    p99_ttft_s=m.p99_ttft_s,
                    mean_tbt_s=m.mean_tbt_s,
                    p99_tbt_s=m.p99_tbt_s,
                    max_stall_s=m.max_stall_s,
                    mean_cost_usd=m.mean_cost_usd,
                    mean_server_usd=m.mean_server_usd,
                    mean_device_j=m.mean_device_j,
                    realised_share=m.realised_share,
                    device_utilisation=m.device_utilisation,
                    migration_rate=m.migration_rate,
                    mean_cost_without_migration_usd=m.mean_cost_without_migration_usd,
                    mean_vs_single=ratio(m.mean_ttft_s, single_mean),
                    p99_vs_single=ratio(m.p99_ttft_s, single_p99),
                    mean_vs_oracle=ratio(
                        m.mean_ttft_s, bound_mean(name, b) if key is not None else oracle_mean
                    ),
                    p99_vs_oracle=ratio(m.p99_ttft_s, oracle_p99),
                )
            )
            if b == options.cdf_at:
                cdf[name] = [t for r in runs(name, key) for t in r.ttft_s]
    return rows, cdf
