"""Options of `disco bench sim`: regimes, argument parsing and the trace, with clear errors.

Every check names the option and the fix, so that the command can print it and exit non-zero
before anything runs.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

from langchain_disco.bench._profiles_view import load_profiles
from langchain_disco.errors import ConfigError
from langchain_disco.scheduling import POLICY_NAMES, CostModel, Resource, _data
from langchain_disco.sim import SimConfig, Simulator, Trace, load_trace
from langchain_disco.sim.prefix_cache import (
    DEFAULT_DEVICE_CACHE_TOKENS,
    DEFAULT_SERVER_CACHE_TTL_S,
    CacheConfig,
)
from langchain_disco.sim.server_csv import looks_like_file, read_server_measurements
from langchain_disco.sim.simulator import DEFAULT_DEVICE_ONLY_UTILISATION, SimDevice
from langchain_disco.sim.trace import BUNDLED_TRACE

ORACLE = "oracle"
ALL_POLICIES: tuple[str, ...] = (*POLICY_NAMES, ORACLE)
"""Every name `--policies` takes: the baselines, the budgeted policies and the oracle."""
BASELINES = ("local", "remote", "race")
"""Policies whose plans ignore the budget: run once per seed, reported at every budget."""
TOLERANCE = 0.03
"""Relative: a realised share within +-3% of the budget is on budget."""
TRACE_COLUMNS = "arrival_s,prompt_tokens,output_tokens"


@dataclass(frozen=True)
class Regime:
    """Which measured endpoints are simulated, the cost model, and what the budget limits."""

    name: str
    device: str
    server: str
    cost_model: CostModel
    resource: Resource
    paper: tuple[str, ...]
    """The paper's policy (or policies) for this regime."""


REGIMES: dict[str, Regime] = {
    r.name: r
    for r in (
        Regime(
            "server-constrained",
            "MacBook Pro M1 Max",
            "together-13b",
            CostModel(),
            "server",
            ("length_threshold",),
        ),
        Regime(
            "device-constrained",
            "Galaxy S25",
            "replicate-70b",
            CostModel(usd_per_j=1e-4),
            "device",
            ("wait_time",),
        ),
        Regime(
            "mixed",
            "2-core x86 cloud VM",
            "together-13b",
            CostModel(usd_per_j=1e-5),
            "unified",
            ("length_threshold", "wait_time"),
        ),
    )
}


@dataclass(frozen=True)
class SimOptions:
    """What `disco bench sim` runs; `validate()` names the option and the fix of a bad value."""

    trace: Path | None = None
    """A CSV trace, or a Mooncake JSONL (multi-turn, with prefix caches); None: the bundled
    Azure 2023 conversation trace."""
    requests: int = 10_000
    regime: str = "server-constrained"
    device: str | None = None
    """The simulated device (measured); None: the regime's."""
    server: str | None = None
    """The simulated hosted API: a measured provider-size, or a CSV of your own measured
    requests (`sim.server_csv`); None: the regime's."""
    device_prior: str | None = None
    """The device prior the policies start from; None: the simulated device's own."""
    server_prior: str | None = None
    """The server prior the policies start from (a provider-size, `all`, or a CSV of measured
    requests); None: the simulated server's own."""
    profiles: Path | None = None
    """A profile cache (`disco profile show`) the policies start from, instead of the priors."""
    budgets: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9)
    policies: tuple[str, ...] = ALL_POLICIES
    seeds: tuple[int, ...] = (0,)
    cdf_budget: float | None = None
    """The budget of the TTFT CDF; None: the one closest to 0.5."""
    migration: bool = False
    """Replay token-level migration (`CostAwareMigration`) after the first token."""
    pace_tok_s: float | None = None
    """Paced delivery in tokens/s; None: eager (as fast as generated)."""
    references: bool = True
    """Also run device-only, server-only and the oracle for the ratio columns; False runs only
    the named policies (to time one alone), and the ratios they lack are NaN."""
    device_utilisation: float = DEFAULT_DEVICE_ONLY_UTILISATION
    """How busy device-only dispatch would keep each device: sizes the number of devices
    (`SimConfig.device_only_utilisation`); higher means longer device queues."""
    scale_lengths: float = 1.0
    """A JSONL trace's prompts (and their 512-token blocks) scaled by this factor."""
    cache_aware: bool = True
    """Multi-turn traces: dispatch told of the device's cached tokens (False: cache-blind, the
    caches act all the same)."""
    device_cache_tokens: float = DEFAULT_DEVICE_CACHE_TOKENS
    """Multi-turn traces: each device's KV-state cache capacity in tokens (LRU)."""
    device_cache_states: int | None = None
    """Multi-turn traces: at most this many KV states per device (None: only tokens bound)."""
    server_cache_ttl_s: float = DEFAULT_SERVER_CACHE_TTL_S
    """Multi-turn traces: how long the provider keeps an unused prefix cached."""

    def cache_config(self) -> CacheConfig:
        """The prefix caches of a multi-turn trace these options describe."""
        return CacheConfig(
            aware=self.cache_aware,
            device_tokens=self.device_cache_tokens,
            device_states=self.device_cache_states,
            server_ttl_s=self.server_cache_ttl_s,
        )

    def cache_label(self) -> str:
        """How a multi-turn run is labelled: cache-aware or -blind, and the caches' sizes."""
        states = f", {self.device_cache_states} states" if self.device_cache_states else ""
        scaled = f"; prompts scaled x{self.scale_lengths:g}" if self.scale_lengths != 1 else ""
        return (
            f"{'cache-aware' if self.cache_aware else 'cache-blind'} dispatch; device KV cache "
            f"{self.device_cache_tokens:g} tokens{states} (LRU), server prompt cache TTL "
            f"{self.server_cache_ttl_s:g} s{scaled}"
        )

    @property
    def regime_spec(self) -> Regime:
        return REGIMES[self.regime]

    @property
    def device_name(self) -> str:
        return self.device or self.regime_spec.device

    @property
    def server_name(self) -> str:
        """How results name the server: its provider-size, or the stem of its CSV."""
        return _label(self.server or self.regime_spec.server)

    @property
    def cdf_at(self) -> float:
        if self.cdf_budget is not None:
            return self.cdf_budget
        return min(self.budgets, key=lambda b: (round(abs(b - 0.5), 9), b))

    def validate(self) -> SimOptions:
        """Check every option before anything runs; returns self."""
        if self.regime not in REGIMES:
            raise ConfigError(f"--regime {self.regime!r}: choose one of {', '.join(REGIMES)}")
        if self.requests < 1:
            raise ConfigError(f"--requests must be at least 1, got {self.requests}")
        if not 0.0 < self.device_utilisation <= 1.0:
            raise ConfigError(
                f"--device-utilisation must be in (0, 1], got {self.device_utilisation:g} "
                "(0.3: each device 30% busy if every request went to it)"
            )
        if not self.scale_lengths > 0:
            raise ConfigError(
                f"--scale-lengths must be > 0, got {self.scale_lengths:g} (0.125: an eighth)"
            )
        if self.device_cache_tokens < 0:
            raise ConfigError(
                f"--device-cache-tokens must be >= 0, got {self.device_cache_tokens:g}"
            )
        if self.device_cache_states is not None and self.device_cache_states < 1:
            raise ConfigError(
                f"--device-cache-states must be >= 1, got {self.device_cache_states} "
                "(leave it out to bound the cache by tokens only)"
            )
        if self.server_cache_ttl_s < 0:
            raise ConfigError(
                f"--server-cache-ttl-s must be >= 0, got {self.server_cache_ttl_s:g} "
                "(OpenAI keeps an unused prefix 5-10 minutes: 300)"
            )
        self._check_sweep()
        self._check_devices()
        self._check_delivery()
        self._check_profiles()
        self._check_servers()
        return self

    def _check_sweep(self) -> None:
        """The budgets, policies and seeds swept, and the CDF's budget among them."""
        if not self.budgets:
            raise ConfigError("--budgets is empty: give shares in [0, 1] such as 0.1,0.5,0.9")
        for b in self.budgets:
            _check_share(b, "--budgets")
        if not self.policies:
            raise ConfigError(f"--policies is empty: choose from {', '.join(ALL_POLICIES)}, all")
        for name in self.policies:
            if name not in ALL_POLICIES:
                raise ConfigError(_unknown_policy(name))
        if not self.seeds:
            raise ConfigError("--seeds is empty: give whole numbers such as 0 or 0,1,2")
        if self.cdf_budget is not None and self.cdf_budget not in self.budgets:
            raise ConfigError(
                f"--cdf-budget {self.cdf_budget:g} is not one of --budgets "
                f"{','.join(f'{b:g}' for b in self.budgets)}"
            )

    def _check_devices(self) -> None:
        """The device and device prior are measured, and the simulated device can be simulated."""
        devices = _data.device_rows()
        for option, given in (("--device", self.device), ("--device-prior", self.device_prior)):
            if given is not None and given not in devices:
                raise ConfigError(
                    f"{option} {given!r} is not a measured device; choose one of "
                    f"{', '.join(repr(d) for d in sorted(devices))}"
                )
        try:
            SimDevice.measured(self.device_name)
        except (ValueError, ZeroDivisionError):
            raise ConfigError(
                f"--device {self.device_name!r} has no TTFT or prefill measurement to simulate "
                "it from; choose another --device (it can still be a --device-prior)"
            ) from None

    def _check_delivery(self) -> None:
        """Paced delivery has a positive rate, and migration is only asked of a simulator that
        replays it."""
        if self.pace_tok_s is not None and not self.pace_tok_s > 0:
            raise ConfigError(
                f"--pace-tok-s must be > 0 (tokens per second), got {self.pace_tok_s}"
            )
        if self.migration and not simulator_migrates():
            raise ConfigError(
                "--migration cost: this version's simulator does not replay migration"
            )

    def _check_profiles(self) -> None:
        """A profile cache replaces the priors, and must load before anything runs."""
        if self.profiles is None:
            return
        if self.device_prior or self.server_prior:
            raise ConfigError(
                "--profiles replaces --device-prior and --server-prior: give one or the others"
            )
        load_profiles(self.profiles, "--profiles")  # missing or unusable: say so now

    def _check_servers(self) -> None:
        """The simulated server and the server prior: measured provider-sizes or CSV files of
        measured requests (read now, so a bad file fails before anything runs)."""
        servers = _data.server_samples()
        server = self.server or self.regime_spec.server
        if looks_like_file(server):
            read_server_measurements(server, option="--server")
        elif server not in servers:
            raise ConfigError(
                f"--server {server!r} is not a measured provider-size; choose one of "
                f"{', '.join(servers)}, or give a CSV of your own measurements (ttft_s[,gap_s])"
            )
        prior = self.server_prior
        if prior is not None and looks_like_file(prior):
            read_server_measurements(prior, option="--server-prior")
        elif prior is not None and prior not in (*servers, "all"):
            raise ConfigError(
                f"--server-prior {prior!r} is not a measured provider-size; choose "
                f"all or one of {', '.join(servers)}, or give a CSV of measured requests"
            )

    def sim_config(self, seed: int) -> SimConfig:
        regime = self.regime_spec
        server = self.server or regime.server
        truth = read_server_measurements(server) if looks_like_file(server) else None
        prior = self.server_prior
        mine = read_server_measurements(prior) if prior and looks_like_file(prior) else None
        if mine is None and prior is None and truth is not None:
            mine = truth  # the simulated server's own measurements
        return SimConfig(
            device=self.device_name,
            server=self.server_name,
            cost_model=regime.cost_model,
            seed=seed,
            prior_device=self.device_prior,
            prior_server=_label(prior) if prior is not None else None,
            server_pool=truth.pool if truth is not None else None,
            prior_server_pool=mine.pool if mine is not None else None,
            device_only_utilisation=self.device_utilisation,
            caches=self.cache_config(),
        )

    def command(self, out: Path | str | None = None, jobs: int = 1) -> str:
        """The `disco bench sim` command line that runs exactly these options."""
        parts = ["disco bench sim", f"--regime {self.regime}"]
        if self.trace is not None:
            parts.append(f"--trace {self.trace}")
        parts.append(f"--requests {self.requests}")
        for option, value in (
            ("--device", self.device),
            ("--server", self.server),
            ("--device-prior", self.device_prior),
            ("--server-prior", self.server_prior),
        ):
            if value is not None:
                parts.append(f"{option} {_quote(value)}")
        if self.profiles is not None:
            parts.append(f"--profiles {_quote(str(self.profiles))}")
        parts.append("--budgets " + ",".join(f"{b:g}" for b in self.budgets))
        policies = "all" if set(self.policies) == set(ALL_POLICIES) else ",".join(self.policies)
        parts.append(f"--policies {policies}")
        parts.append("--seeds " + ",".join(str(s) for s in self.seeds))
        if self.cdf_budget is not None:
            parts.append(f"--cdf-budget {self.cdf_budget:g}")
        if not self.references:
            parts.append("--no-references")
        if self.device_utilisation != DEFAULT_DEVICE_ONLY_UTILISATION:
            parts.append(f"--device-utilisation {self.device_utilisation:g}")
        if self.scale_lengths != 1.0:
            parts.append(f"--scale-lengths {self.scale_lengths:g}")
        if not self.cache_aware:
            parts.append("--cache-blind")
        if self.device_cache_tokens != DEFAULT_DEVICE_CACHE_TOKENS:
            parts.append(f"--device-cache-tokens {self.device_cache_tokens:g}")
        if self.device_cache_states is not None:
            parts.append(f"--device-cache-states {self.device_cache_states}")
        if self.server_cache_ttl_s != DEFAULT_SERVER_CACHE_TTL_S:
            parts.append(f"--server-cache-ttl-s {self.server_cache_ttl_s:g}")
        if self.migration:
            parts.append("--migration cost")
        if self.pace_tok_s is not None:
            parts.append(f"--pace-tok-s {self.pace_tok_s:g}")
        if jobs != 1:
            parts.append(f"--jobs {jobs}")
        if out is not None:
            parts.append(f"--out {out}")
        return " ".join(parts)


def simulator_migrates() -> bool:
    """Whether `Simulator.run` replays token-level migration (it takes `migration=`)."""
    return "migration" in inspect.signature(Simulator.run).parameters


def _quote(value: str) -> str:
    return f"'{value}'" if " " in value else value


def _unknown_policy(name: str) -> str:
    return f"--policies: unknown policy {name!r}; choose from {', '.join(ALL_POLICIES)}, or all"


def _check_share(b: float, option: str) -> None:
    if not 0.0 <= b <= 1.0:  # also rejects NaN
        raise ConfigError(
            f"{option}: {b:g} is outside [0, 1]; a budget is a share of the budgeted resource "
            "(0 never spends it, 1 races every request)"
        )


# -- argument parsing ---------------------------------------------------------------------------


def _items(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_budgets(text: str) -> tuple[float, ...]:
    """`"0.1,0.5,0.9"` -> shares, each checked to lie in [0, 1]; sorted, without repeats."""
    items = _items(text)
    if not items:
        raise ConfigError("--budgets is empty: give shares in [0, 1] such as 0.1,0.5,0.9")
    out: set[float] = set()
    for item in items:
        try:
            b = float(item)
        except ValueError:
            raise ConfigError(f"--budgets: {item!r} is not a number") from None
        _check_share(b, "--budgets")
        out.add(b)
    return tuple(sorted(out))


def parse_policies(text: str) -> tuple[str, ...]:
    """`"all"` or comma-separated names of `ALL_POLICIES`, in their canonical order."""
    items = _items(text)
    if not items:
        raise ConfigError(f"--policies is empty: choose from {', '.join(ALL_POLICIES)}, or all")
    if "all" in items:
        return ALL_POLICIES
    for name in items:
        if name not in ALL_POLICIES:
            raise ConfigError(_unknown_policy(name))
    return tuple(p for p in ALL_POLICIES if p in items)


def parse_seeds(text: str) -> tuple[int, ...]:
    """`"0,1,2"` -> seeds, without repeats."""
    items = _items(text)
    if not items:
        raise ConfigError("--seeds is empty: give whole numbers such as 0 or 0,1,2")
    out: list[int] = []
    for item in items:
        try:
            seed = int(item)
        except ValueError:
            raise ConfigError(f"--seeds: {item!r} is not a whole number") from None
        if seed not in out:
            out.append(seed)
    return tuple(out)


def load_bench_trace(path: Path | None, requests: int, scale_lengths: float = 1.0) -> Trace:
    """The first `requests` requests of a CSV or Mooncake JSONL trace (or of the bundled one),
    with clear errors; `scale_lengths` scales a JSONL trace's prompts."""
    expected = (
        f"expected a CSV with a header and the columns {TRACE_COLUMNS} "
        "(arrival time in seconds, prompt tokens, output tokens), or the Azure trace's "
        "TIMESTAMP,ContextTokens,GeneratedTokens, or a Mooncake JSONL trace (timestamp, "
        "input_length, output_length, hash_ids)"
    )
    if path is not None:
        if not path.exists():
            raise ConfigError(f"--trace {path}: no such file; {expected}")
        if not path.is_file():
            raise ConfigError(f"--trace {path} is not a file; {expected}")
    where = f"--trace {path}" if path is not None else f"the bundled trace {BUNDLED_TRACE}"
    try:
        trace = load_trace(path, scale_lengths=scale_lengths)
    except OSError as exc:
        raise ConfigError(f"cannot read {where}: {exc.strerror or exc}") from None
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"{where}: {exc}; {expected}") from None
    if not len(trace):
        raise ConfigError(f"{where} has no requests; {expected}")
    return trace.head(requests)


def _label(server: str) -> str:
    """A provider-size as it is; a measurements file by its stem, flagged when its requests
    all decode at the bundled median gap (it had no gap column)."""
    if not looks_like_file(server):
        return server
    measured = read_server_measurements(server)
    return measured.name if measured.gap_from_file else f"{measured.name} (bundled median gap)"
