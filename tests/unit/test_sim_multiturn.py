"""Multi-turn replay: the Mooncake trace format, the prefix-cache models, cache-aware against
cache-blind dispatch, learning on evaluated tokens, the bounds and `disco bench sim` options."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from langchain_disco.bench._sim_options import SimOptions, load_bench_trace
from langchain_disco.errors import ConfigError
from langchain_disco.scheduling import Budget, CostModel, Profiles, policy_from_name
from langchain_disco.scheduling.dispatch import (
    DispatchContext,
    LocalOnly,
    Plan,
    RemoteOnly,
    RequestFeatures,
    RequestOutcome,
)
from langchain_disco.scheduling.estimates import REMOTE, resolve_action
from langchain_disco.sim import SimConfig, Simulator, load_trace
from langchain_disco.sim.prefix_cache import (
    CacheConfig,
    CachedTokens,
    DevicePrefixCache,
    ServerPrefixCache,
    common_blocks,
)
from langchain_disco.sim.queue_bound import hindsight_queue_bound
from langchain_disco.sim.simulator import _conversation_assignment
from langchain_disco.sim.trace import Trace, trace_from_jsonl
from tests._cli import assert_clean_failure, invoke

MOONCAKE = (
    Path(__file__).resolve().parents[3] / "shared/data/traces/mooncake_conversation_trace.jsonl"
)

ROWS = [
    {"timestamp": 2000, "input_length": 1100, "output_length": 40, "hash_ids": [0, 1, 2]},
    {"timestamp": 0, "input_length": 1000, "output_length": 30, "hash_ids": [0, 1]},
    {"timestamp": 5000, "input_length": 600, "output_length": 0, "hash_ids": [0, 7]},
]


def _jsonl(path: Path, rows: list[dict[str, object]] = ROWS) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    return path


def _chats(conversations: int = 6, turns: int = 5, gap_s: float = 60.0) -> Trace:
    """Conversations that resend their growing context every turn, after a shared system
    prompt (block 0); blocks of 64 tokens."""
    rows = []
    for c in range(conversations):
        for k in range(turns):
            blocks = (0, *(1000 * (c + 1) + j for j in range(4 + 4 * k)))
            rows.append((k * gap_s + c * 0.5, len(blocks) * 64 - 10, 20, blocks))
    rows.sort(key=lambda r: r[0])
    return Trace(
        tuple(r[0] for r in rows),
        tuple(r[1] for r in rows),
        tuple(r[2] for r in rows),
        "chats",
        tuple(r[3] for r in rows),
        64.0,
    )


# The trace format


def test_a_mooncake_jsonl_loads_sorted_in_seconds_with_its_blocks(tmp_path: Path) -> None:
    trace = load_trace(_jsonl(tmp_path / "t.jsonl"))
    assert trace.has_prefixes
    assert trace.arrival_s == (0.0, 2.0, 5.0)
    assert trace.prompt_tokens == (1000, 1100, 600)
    assert trace.output_tokens == (30, 40, 1)  # an empty answer still has a first token
    assert trace.hash_ids == ((0, 1), (0, 1, 2), (0, 7))
    assert trace.block_tokens == 512


def test_scaling_keeps_each_prompts_prefix_share(tmp_path: Path) -> None:
    trace = load_trace(_jsonl(tmp_path / "t.jsonl"), scale_lengths=0.125)
    assert trace.prompt_tokens == (125, 138, 75)
    assert trace.block_tokens == 64
    # Two shared blocks of the second prompt: 128 tokens of its 138 (as 1024 of 1100 unscaled).
    assert trace.shared_tokens(1, 2) == 128
    # Never the whole prompt: a model always evaluates its last token.
    assert trace.shared_tokens(0, 2) == 124
    assert trace.shared_tokens(0, 0) == 0


def test_a_jsonl_is_told_by_content_and_csv_traces_still_load(tmp_path: Path) -> None:
    assert load_trace(_jsonl(tmp_path / "trace.txt")).has_prefixes
    csv = tmp_path / "t.csv"
    csv.write_text("arrival_s,prompt_tokens,output_tokens\n0,10,5\n1,20,6\n", "utf-8")
    plain = load_trace(csv)
    assert not plain.has_prefixes and plain.prompt_tokens == (10, 20)
    with pytest.raises(ValueError, match="JSONL"):
        load_trace(csv, scale_lengths=0.5)


def test_a_bad_record_names_its_line() -> None:
    with pytest.raises(ValueError, match="line 2"):
        trace_from_jsonl([json.dumps(ROWS[0]), '{"timestamp": 1}'])


def test_head_and_repeat_keep_the_blocks_and_repeats_are_new_conversations() -> None:
    trace = trace_from_jsonl([json.dumps(r) for r in ROWS])
    assert trace.head(2).hash_ids == ((0, 1), (0, 1, 2))
    tiled = trace.repeat_to(5)
    assert tiled.hash_ids is not None
    assert tiled.hash_ids[:3] == trace.hash_ids
    assert tiled.hash_ids[3] == (8, 9)  # shifted past every id of the first tile
    assert common_blocks(tiled.hash_ids[3], trace.hash_ids[0]) == 0


@pytest.mark.skipif(not MOONCAKE.is_file(), reason="the shared Mooncake trace is not here")
def test_the_shared_mooncake_trace_loads_whole() -> None:
    trace = load_trace(MOONCAKE)
    assert len(trace) == 12_031
    assert 3500 < trace.span_s < 3600
    assert 11_000 < sum(trace.prompt_tokens) / len(trace) < 13_000


# The cache models


def test_device_cache_serves_the_longest_prefix_and_evicts_the_least_recently_used() -> None:
    cache = DevicePrefixCache(capacity_tokens=10 * 64, block_tokens=64)
    cache.store((0, 1, 2, 3))
    cache.store((0, 5, 6))
    assert cache.lookup((0, 1, 2, 9)) == 3  # the longest common prefix, refreshed
    cache.store((7, 8, 9, 10))  # 11 blocks > 10: the least recently used, (0, 5, 6), goes
    assert cache.evictions == 1
    assert cache.lookup((0, 5, 6)) == 1  # only the shared first block, from (0, 1, 2, 3)
    assert cache.lookup((0, 1, 2, 3)) == 4
    assert cache.tokens == 8 * 64


def test_device_cache_keeps_one_state_per_growing_conversation() -> None:
    cache = DevicePrefixCache(capacity_tokens=1e9, block_tokens=64, max_states=2)
    cache.store((0, 1))
    cache.store((0, 1, 2, 3))  # extends the first: it replaces it
    assert len(cache) == 1
    cache.store((4,))
    cache.store((5,))  # a third state over max_states=2: the oldest goes
    assert len(cache) == 2
    assert cache.lookup((0, 1, 2, 3)) == 0


def test_server_cache_expires_unused_prefixes_and_a_new_use_refreshes_them() -> None:
    cache = ServerPrefixCache(ttl_s=300, block_tokens=512, min_tokens=1024)
    cache.store((0, 1, 2), now_s=0.0)
    assert cache.lookup((0, 1, 2, 3), now_s=299.0) == 3
    assert cache.lookup((0, 1, 9), now_s=10.0) == 2
    cache.store((0, 1), now_s=200.0)  # refreshes blocks 0 and 1 only
    assert cache.lookup((0, 1, 2), now_s=400.0) == 2
    assert cache.lookup((0, 1, 2), now_s=501.0) == 0
    assert cache.lookup((0,), now_s=250.0) == 0  # 512 tokens: below the provider's minimum


def test_cached_server_input_bills_the_cached_price() -> None:
    cm = CostModel()
    common = {"local_begin_s": 0.0, "prefill_s": 1.0, "prompt_tokens": 2000}
    fresh = resolve_action(REMOTE, server_ttft_s=0.5, output_tokens=10, cost_model=cm, **common)
    warm = resolve_action(
        REMOTE,
        server_ttft_s=0.5,
        output_tokens=10,
        cost_model=cm,
        server_cached_tokens=1500,
        **common,
    )
    saved = (cm.price_in_per_mtok - cm.price_cached_in_per_mtok) * 1500 / 1e6
    assert fresh.cost.server_usd - warm.cost.server_usd == pytest.approx(saved)


def test_a_cached_prompt_answers_sooner_on_the_server() -> None:
    caches = CacheConfig()
    assert caches.server_ttft_s(1.0, 0, 1000) == 1.0
    assert caches.server_ttft_s(1.0, 500, 1000) == pytest.approx(0.6)
    with pytest.raises(ValueError):
        CacheConfig(server_cached_ttft_saving=1.0)


# Conversations, dispatch and learning


def test_follow_up_turns_stay_on_their_device_and_a_system_prompt_links_nothing() -> None:
    trace = _chats(conversations=3, turns=3)
    assert trace.hash_ids is not None
    devices = _conversation_assignment(trace.hash_ids, 100)
    by_conversation: dict[int, set[int]] = {}
    for blocks, device in zip(trace.hash_ids, devices, strict=True):
        by_conversation.setdefault(blocks[1] // 1000, set()).add(device)
    assert all(len(d) == 1 for d in by_conversation.values())
    assert len({next(iter(d)) for d in by_conversation.values()}) == 3


@dataclass
class _Recorder:
    """A policy that plans like `inner` and keeps every request's features."""

    inner: LocalOnly | RemoteOnly
    seen: list[RequestFeatures] = field(default_factory=list)
    name: str = "recorder"

    def plan(self, request: RequestFeatures, ctx: DispatchContext | None = None) -> Plan:
        self.seen.append(request)
        return self.inner.plan(request, ctx)

    def observe(self, outcome: RequestOutcome) -> None:
        return None


def _sim(trace: Trace, *, aware: bool, **caches: float) -> Simulator:
    return Simulator(
        trace,
        SimConfig(n_devices=6, caches=CacheConfig(aware=aware, **caches)),  # type: ignore[arg-type]
    )


def test_aware_dispatch_sees_the_device_cache_and_blind_dispatch_does_not() -> None:
    trace = _chats()
    aware, blind = _Recorder(LocalOnly()), _Recorder(LocalOnly())
    a = _sim(trace, aware=True).run(aware)
    b = _sim(trace, aware=False).run(blind)
    follow_ups = [i for i, f in enumerate(aware.seen) if f.local_cached_tokens > 64]
    assert len(follow_ups) == 6 * 4  # every turn after the first of each conversation
    assert all(f.local_cached_tokens == 0 for f in blind.seen)
    # The caches act in both arms: the same physical device TTFTs.
    assert a.ttft_s == b.ttft_s
    assert a.device_cached_tokens == b.device_cached_tokens
    first = next(i for i in follow_ups)
    assert a.ttft_s[first] < 0.5 * _sim(trace, aware=True).prefill_s[first]


def test_the_server_bill_reads_its_cache_in_both_arms() -> None:
    trace = _chats()
    plain = replace(trace, hash_ids=None)
    fresh = Simulator(plain, SimConfig(n_devices=6)).run(RemoteOnly())
    for aware in (True, False):
        run = _sim(trace, aware=aware).run(RemoteOnly())
        assert sum(run.server_usd) < sum(fresh.server_usd)
        cached = [i for i, c in enumerate(run.server_cached_tokens) if c > 0]
        assert cached and all(run.server_usd[i] < fresh.server_usd[i] for i in cached)
        assert all(run.ttft_s[i] < fresh.ttft_s[i] for i in cached)


def test_a_short_ttl_leaves_nothing_cached_on_the_server() -> None:
    run = _sim(_chats(gap_s=60.0), aware=True, server_ttl_s=30.0).run(RemoteOnly())
    assert not any(run.server_cached_tokens)


def test_a_small_device_cache_evicts_and_turns_prefill_again() -> None:
    trace = _chats()
    big = _sim(trace, aware=True).run(LocalOnly())
    small = _sim(trace, aware=True, device_tokens=64.0).run(LocalOnly())
    assert sum(small.device_cached_tokens) < sum(big.device_cached_tokens)
    assert sum(small.ttft_s) > sum(big.ttft_s)


def test_aware_learning_fits_the_device_on_evaluated_tokens_and_blind_learning_does_not() -> None:
    trace = _chats(conversations=6, turns=8)
    fresh = 1500
    predictions = {}
    for aware in (True, False):
        sim = _sim(trace, aware=aware)
        profiles = Profiles.prior("MacBook Pro M1 Max", "together-13b", seed=0)
        sim.run(LocalOnly(), profiles=profiles)
        predictions[aware] = profiles.device.predict_ttft_s(fresh)
        truth = sim.device.mean_prefill_s(fresh)
    assert truth / 1.5 < predictions[True] < truth * 1.5
    assert predictions[False] < truth / 1.5  # cached turns learned as whole prompts


def test_a_trace_without_blocks_has_no_caches_and_replays_as_before() -> None:
    trace = _chats()
    plain = replace(trace, hash_ids=None)
    sim = Simulator(plain, SimConfig(n_devices=6))
    assert sim.caches is None
    run = sim.run(LocalOnly())
    assert run.device_cached_tokens == [] and run.server_cached_tokens == []
    assert sim.assignment == [i % 6 for i in range(len(plain))]


# The bounds


def test_the_warm_cache_bound_is_below_the_bound_on_a_runs_caches() -> None:
    trace = _chats()
    sim = _sim(trace, aware=True)
    budget = Budget(share=0.5, resource="server")
    run = sim.run(policy_from_name("generalized", budget), budget)
    limit = sum(run.spend)
    warm = hindsight_queue_bound(sim, budget, limit)
    seen = hindsight_queue_bound(sim, budget, limit, cached=CachedTokens.of(run))
    assert warm.mean_ttft_s <= seen.mean_ttft_s
    assert all(
        w >= s for w, s in zip(sim.warm_cache().device, run.device_cached_tokens, strict=True)
    )
    plain = Simulator(replace(trace, hash_ids=None), SimConfig(n_devices=6))
    assert sim.oracle(budget).mean_ttft_s < plain.oracle(budget).mean_ttft_s


# `disco bench sim`


def test_sim_options_carry_the_cache_settings_to_the_simulator_and_the_command() -> None:
    options = SimOptions(
        scale_lengths=0.125,
        cache_aware=False,
        device_cache_tokens=4096,
        device_cache_states=8,
        server_cache_ttl_s=600,
    ).validate()
    caches = options.sim_config(0).caches
    assert caches == CacheConfig(aware=False, device_tokens=4096, device_states=8, server_ttl_s=600)
    command = options.command()
    for part in (
        "--scale-lengths 0.125",
        "--cache-blind",
        "--device-cache-tokens 4096",
        "--device-cache-states 8",
        "--server-cache-ttl-s 600",
    ):
        assert part in command
    assert "--cache-blind" not in SimOptions().command()
    assert "cache-blind" in options.cache_label()


@pytest.mark.parametrize(
    ("field_name", "value", "option"),
    [
        ("scale_lengths", 0.0, "--scale-lengths"),
        ("device_cache_tokens", -1.0, "--device-cache-tokens"),
        ("device_cache_states", 0, "--device-cache-states"),
        ("server_cache_ttl_s", -5.0, "--server-cache-ttl-s"),
    ],
)
def test_bad_cache_options_name_the_option(field_name: str, value: float, option: str) -> None:
    with pytest.raises(ConfigError, match=option):
        SimOptions(**{field_name: value}).validate()  # type: ignore[arg-type]


def test_the_bench_loader_scales_a_jsonl_trace(tmp_path: Path) -> None:
    trace = load_bench_trace(_jsonl(tmp_path / "t.jsonl"), 2, 0.5)
    assert trace.prompt_tokens == (500, 550)


def test_disco_bench_sim_replays_a_jsonl_trace_and_labels_the_arm(tmp_path: Path) -> None:
    rows = [
        {
            "timestamp": 1000 * t,
            "input_length": 700 + 300 * t,
            "output_length": 20,
            "hash_ids": list(range(2 + t)),
        }
        for t in range(6)
    ]
    path = _jsonl(tmp_path / "chat.jsonl", rows)
    common = ["bench", "sim", "--trace", str(path), "--requests", "6", "--policies"]
    common += ["generalized", "--budgets", "0.5", "--no-plots"]
    code, output = invoke(*common, "--cache-blind", "--out", str(tmp_path / "blind"))
    assert code == 0, output
    flat = " ".join(output.split())
    assert "cache-blind dispatch" in flat and "generalized" in flat
    code, output = invoke(*common, "--scale-lengths", "0", "--out", str(tmp_path / "x"))
    assert_clean_failure(code, output, "--scale-lengths")
