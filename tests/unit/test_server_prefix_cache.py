"""What the provider has cached: the prompts recently sent to it, a hit rate learned from the
cached tokens it reported, a warm TTFT distribution kept apart from fresh prompts', and the
cached-input price in every budgeted estimate."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from langchain_disco._live_scheduler import LiveScheduler, ServerPrefixQuery
from langchain_disco._prefixes import prompt_prefixes
from langchain_disco.config import DiscoSettings
from langchain_disco.endpoints.base import GenerationParams
from langchain_disco.scheduling import Budget, policy_from_name
from langchain_disco.scheduling.cost import Cost, CostModel
from langchain_disco.scheduling.dispatch import (
    DispatchContext,
    EndpointOutcome,
    Plan,
    RequestFeatures,
    RequestOutcome,
    Start,
)
from langchain_disco.scheduling.estimates import estimate_action
from langchain_disco.scheduling.profiles import Profiles, ServerProfile
from langchain_disco.scheduling.server_cache import (
    MAX_AGE_S,
    NO_MATCH,
    PrefixMatch,
    ServerPrefixCache,
)

PARAMS = GenerationParams()


def _chat(turns: int) -> list:
    messages: list = [SystemMessage("You answer questions about rivers. " * 20)]
    for i in range(turns):
        messages.append(HumanMessage(f"Question {i}: how long is river {i}?"))
        messages.append(AIMessage(f"River {i} is {100 + i} km long."))
    messages.append(HumanMessage("And the next one?"))
    return messages


# -- the prefixes of a prompt ------------------------------------------------------------------


def test_a_follow_up_turn_shares_every_earlier_message_and_nothing_after_a_change() -> None:
    first = prompt_prefixes(_chat(2), PARAMS, 600)
    follow = prompt_prefixes(_chat(3), PARAMS, 700)
    # _chat(3) begins with _chat(2)'s messages except the last question: 5 shared boundaries.
    assert [d for d, _ in follow[:5]] == [d for d, _ in first[:5]]
    assert follow[5][0] != first[5][0]
    # Token counts grow along the prompt and end at the whole prompt.
    assert [t for _, t in follow] == sorted(t for _, t in follow) and follow[-1][1] == 700
    # The tools come before the messages in a provider's prompt: other tools, other prefixes.
    tools = GenerationParams(tools=({"type": "function", "function": {"name": "f"}},))
    assert prompt_prefixes(_chat(2), tools, 600)[0][0] != first[0][0]


def test_message_contents_that_are_not_plain_json_still_have_a_prefix() -> None:
    message = HumanMessage(content=[{"type": "text", "text": "hi"}, {"type": "image_url"}])
    ((digest, tokens),) = prompt_prefixes([message], PARAMS, 42)
    assert len(digest) == 16 and tokens == 42
    # A different part makes a different digest: the image is not dropped from the prefix.
    other = HumanMessage(content=[{"type": "text", "text": "hi"}])
    assert prompt_prefixes([other], PARAMS, 42)[0][0] != digest


# -- the cache and its learned hit rate --------------------------------------------------------


def _prefixes(*sizes: int, tag: str = "a") -> list[tuple[bytes, int]]:
    return [(f"{tag}{i}".encode(), size) for i, size in enumerate(sizes)]


def test_nothing_is_expected_cached_before_the_provider_has_reported_caching() -> None:
    cache = ServerPrefixCache()
    cache.sent(_prefixes(500, 900), now_s=0.0)
    match = cache.match(_prefixes(500, 900, 1000), now_s=10.0)
    assert match.shared_tokens == 900 and match.age_s == 10.0
    assert match.expected_cached_tokens == 0


def test_the_hit_rate_is_learned_from_reports_and_forgotten_when_the_provider_stops() -> None:
    cache = ServerPrefixCache()
    match = PrefixMatch(shared_tokens=1000, age_s=5.0)
    for _ in range(200):
        cache.observe(match, 1000)  # the provider read every shared token from its cache
    assert cache.rate(5.0) > 0.9
    # Another age bucket has its own rate: an hour-old prefix has not been shown cached.
    assert cache.rate(3000.0) == 0.0
    for _ in range(400):
        cache.observe(match, 0)  # caching switched off (or the prefixes evicted)
    assert cache.rate(5.0) < 0.05


def test_a_provider_that_caches_in_blocks_is_learned_as_the_share_it_bills() -> None:
    # OpenAI-like: prefixes cached in whole 128-token blocks after the first 1,024.
    cache = ServerPrefixCache()
    rng = random.Random(3)
    for _ in range(500):
        shared = rng.randint(1100, 3000)
        reported = 1024 + (shared - 1024) // 128 * 128
        cache.observe(PrefixMatch(shared, 30.0), reported)
    assert 0.9 < cache.rate(30.0) < 1.0


def test_prefixes_are_forgotten_after_the_longest_any_provider_keeps_them_and_when_full() -> None:
    cache = ServerPrefixCache(capacity=4)
    cache.sent(_prefixes(100, 200), now_s=0.0)
    assert cache.match(_prefixes(100, 200), now_s=MAX_AGE_S + 1) == NO_MATCH
    cache.sent(_prefixes(1, 2, 3, tag="b"), now_s=1.0)
    cache.sent(_prefixes(1, 2, 3, tag="c"), now_s=2.0)
    assert len(cache) == 4  # bounded: the least recently sent digests went first
    assert cache.match(_prefixes(100, 200), now_s=3.0) == NO_MATCH
    assert cache.match(_prefixes(1, 2, 3, tag="c"), now_s=3.0).shared_tokens == 3
    assert cache.match(_prefixes(1, 2, tag="b"), now_s=3.0) == NO_MATCH
    with pytest.raises(ValueError, match="capacity"):
        ServerPrefixCache(capacity=0)


# -- the server's TTFT: warm requests apart ----------------------------------------------------


def test_warm_ttfts_are_learned_apart_and_answer_only_for_mostly_cached_prompts() -> None:
    server = ServerProfile("s", [1.0] * 50, min_bucket_samples=32)
    for _ in range(31):
        server.observe(0.1, prompt_tokens=1000, cached_tokens=900)
    # Not enough warm samples yet: a warm prompt is predicted like a fresh one.
    assert server.distribution(1000, 900).mean() == pytest.approx(1.0)
    server.observe(0.1, prompt_tokens=1000, cached_tokens=900)
    assert server.distribution(1000, 900).mean() == pytest.approx(0.1)
    # Fresh prompts, and ones with a small cached part, never see the warm samples.
    assert server.distribution(1000).mean() == pytest.approx(1.0)
    assert server.distribution(1000, 100).mean() == pytest.approx(1.0)
    # And the warm samples persist.
    again = ServerProfile.from_dict(json.loads(json.dumps(server.to_dict())))
    assert again.distribution(1000, 900).mean() == pytest.approx(0.1)


def test_a_profile_saved_before_warm_samples_existed_still_loads() -> None:
    data = ServerProfile("s", [1.0, 2.0]).to_dict()
    del data["warm"]
    loaded = ServerProfile.from_dict(data)
    assert len(loaded.warm) == 0 and loaded.distribution(100, 90).mean() == pytest.approx(1.5)


def test_profiles_learn_a_warm_server_run_from_the_cached_tokens_it_reported() -> None:
    profiles = Profiles.prior()
    fresh_n = len(profiles.server.ttft)
    run = EndpointOutcome(
        "remote", 0.0, 0.05, 1.0, input_tokens=1200, output_tokens=10, cached_input_tokens=1100
    )
    profiles.observe(
        RequestOutcome(
            request=RequestFeatures(prompt_tokens=1000),
            plan=Plan((Start("remote"),), action="remote"),
            endpoints=(run,),
            winner="remote",
            ttft_s=0.05,
            output_tokens=10,
            cost=Cost(),
        )
    )
    assert len(profiles.server.warm) == 1
    assert len(profiles.server.ttft) == fresh_n


# -- the cached price in the estimates and in dispatch -----------------------------------------


def test_the_server_estimate_bills_cached_input_at_its_price() -> None:
    cm = CostModel()
    server = Profiles.prior().server.distribution()
    kwargs = dict(server=server, prefill_s=1.0, queue_wait_s=0.0, output_tokens=10, cost_model=cm)
    fresh = estimate_action(
        Plan((Start("remote"),), action="remote"), prompt_tokens=10_000, **kwargs
    )
    warm = estimate_action(
        Plan((Start("remote"),), action="remote"),
        prompt_tokens=10_000,
        server_cached_tokens=9_000,
        **kwargs,
    )
    saved = (cm.price_in_per_mtok - cm.price_cached_in_per_mtok) * 9_000 / 1e6
    assert fresh.cost.server_usd - warm.cost.server_usd == pytest.approx(saved)


@pytest.mark.parametrize("name", ["generalized", "length_threshold", "wait_time"])
def test_every_budgeted_policy_plans_a_warm_prompt_with_the_cached_price(name: str) -> None:
    # A long prompt, 90% of it expected in the provider's cache: every action the plan weighed
    # that starts the server is expected to cost less on the server than for a fresh prompt.
    policy = policy_from_name(name, Budget(share=0.5, resource="server"))
    ctx = DispatchContext(profiles=Profiles.prior(), cost_model=CostModel())
    fresh = policy.plan(RequestFeatures(prompt_tokens=20_000), ctx)
    warm = policy.plan(RequestFeatures(prompt_tokens=20_000, remote_cached_tokens=18_000), ctx)
    fresh_usd = {e.action: e.cost.server_usd for e in fresh.expected}
    warm_usd = {e.action: e.cost.server_usd for e in warm.expected}
    common = [a for a in fresh_usd if a in warm_usd and fresh_usd[a] > 0]
    assert common, (fresh.expected, warm.expected)
    cm = ctx.cost_model
    saved = (cm.price_in_per_mtok - cm.price_cached_in_per_mtok) * 18_000 / 1e6
    for action in common:  # at most the whole discount (a server started later, less often)
        assert 0 < fresh_usd[action] - warm_usd[action] <= saved * (1 + 1e-9)


def test_the_budget_range_of_a_warm_prompt_is_the_discounted_one() -> None:
    ctx = DispatchContext(profiles=Profiles.prior(), cost_model=CostModel())
    budget = Budget(share=0.5, resource="server")
    _, fresh = budget.bounds(ctx, 20_000, 0.0, 50.0)
    _, warm = budget.bounds(ctx, 20_000, 0.0, 50.0, None, 18_000)
    cm = ctx.cost_model
    saved = (cm.price_in_per_mtok - cm.price_cached_in_per_mtok) * 18_000 / 1e6
    assert fresh - warm == pytest.approx(saved)  # a race starts the server at once


# -- the live scheduler --------------------------------------------------------------------------


def _report_like_outcome(
    scheduler: LiveScheduler, query: ServerPrefixQuery, prompt: int, cached: int
) -> None:
    run = EndpointOutcome(
        "remote", 0.0, 0.2, 1.0, input_tokens=prompt, output_tokens=10, cached_input_tokens=cached
    )
    outcome = RequestOutcome(
        request=RequestFeatures(prompt_tokens=prompt),
        plan=Plan((Start("remote"),), action="remote"),
        endpoints=(run,),
        winner="remote",
        ttft_s=0.2,
        output_tokens=10,
        cost=Cost(),
    )
    with scheduler._lock:
        scheduler._learn_server_prefix(outcome, query)


def test_the_live_scheduler_expects_a_warm_conversation_after_the_provider_showed_it() -> None:
    settings = DiscoSettings(persist_profiles=False)
    scheduler = LiveScheduler(settings, policy_from_name("generalized", Budget(share=0.5)))
    expected = []
    for turn in range(1, 30):
        messages = _chat(turn)
        prompt = 40 * len(messages)
        query = scheduler.server_prefix_query(prompt_prefixes(messages, PARAMS, prompt))
        features = scheduler.features(prompt, None, None, None, query)
        expected.append((features.remote_cached_tokens, query.match.shared_tokens))
        # The provider caches everything it was sent before (what the loopback's cache does).
        _report_like_outcome(scheduler, query, prompt, query.match.shared_tokens)
    assert expected[0] == (0, 0)  # nothing sent yet
    assert expected[1][0] == 0 < expected[1][1]  # shared, but caching not yet shown
    cached, shared = expected[-1]
    assert 0.8 * shared <= cached <= shared


def test_a_provider_that_never_caches_keeps_every_request_priced_fresh() -> None:
    settings = DiscoSettings(persist_profiles=False)
    scheduler = LiveScheduler(settings, policy_from_name("generalized", Budget(share=0.5)))
    for turn in range(1, 30):
        messages = _chat(turn)
        prompt = 40 * len(messages)
        query = scheduler.server_prefix_query(prompt_prefixes(messages, PARAMS, prompt))
        features = scheduler.features(prompt, None, None, None, query)
        assert features.remote_cached_tokens == 0
        _report_like_outcome(scheduler, query, prompt, 0)


# -- the hit rates persist with the profiles ---------------------------------------------------


def test_hit_rates_round_trip_and_older_files_load_without_them() -> None:
    from langchain_disco.scheduling import HitRates, Profiles

    profiles = Profiles.prior()
    for _ in range(5):
        profiles.server_cache.observe(10.0, 1000, 950)
    profiles.server_cache.observe(4000.0, 1000, 0)
    data = json.loads(json.dumps(profiles.to_dict()))
    back = Profiles.from_dict(data)
    assert back.server_cache.rate(10.0) == profiles.server_cache.rate(10.0) > 0.7
    assert back.server_cache.rate(4000.0) == 0.0
    del data["server_cache"]  # a file from before the rates were saved
    assert Profiles.from_dict(data).server_cache.rate(10.0) == 0.0
    # Saved with other age buckets: nothing is carried into buckets that mean something else.
    other = {"age_edges_s": [60.0], "buckets": [{"predicted": 1, "reported": 1, "reports": 1}] * 2}
    assert HitRates.from_dict(other).rate(10.0) == 0.0


@pytest.mark.parametrize(
    ("bucket", "field"),
    [
        ({"predicted": -1.0, "reported": 0.0, "reports": 1.0}, "predicted"),
        ({"predicted": 10.0, "reported": "x", "reports": 1.0}, "reported"),
        ({"predicted": 10.0, "reported": 1.0}, "reports"),
        ({"predicted": 1e300, "reported": 1.0, "reports": 1.0}, "predicted"),
    ],
)
def test_a_corrupt_hit_rate_is_refused_naming_its_field(
    bucket: dict[str, object], field: str
) -> None:
    from langchain_disco.scheduling import HitRates
    from langchain_disco.scheduling.server_cache import AGE_EDGES_S

    good = {"predicted": 10.0, "reported": 5.0, "reports": 2.0}
    data = {"age_edges_s": list(AGE_EDGES_S), "buckets": [good, bucket, good]}
    with pytest.raises(ValueError, match=rf"server_cache\.buckets\[1\]\.{field}"):
        HitRates.from_dict(data)


def test_a_rate_saved_beyond_what_learning_allows_is_held_to_it() -> None:
    from langchain_disco.scheduling import HitRates
    from langchain_disco.scheduling.server_cache import AGE_EDGES_S

    bucket = {"predicted": 100.0, "reported": 150.0, "reports": 1e9}
    rates = HitRates.from_dict({"age_edges_s": list(AGE_EDGES_S), "buckets": [bucket] * 3})
    assert 0.0 < rates.rate(0.0) <= 1.0


def test_a_million_reports_keep_the_rate_finite_and_on_the_truth() -> None:
    from langchain_disco.scheduling import HitRates

    rates = HitRates()
    rng = random.Random(5)
    for i in range(1_000_000):
        shared = rng.randint(1, 100_000)
        truth = 0.9 if i < 500_000 else 0.3  # the provider changes its caching halfway
        rates.observe(1.0, shared, round(shared * truth * rng.uniform(0.9, 1.1)))
    assert rates.rate(1.0) == pytest.approx(0.3 * 100 / 101, rel=0.05)
    data = rates.to_dict()
    assert HitRates.from_dict(data).rate(1.0) == rates.rate(1.0)


def test_a_restarted_process_keeps_what_it_learned_of_the_providers_cache(tmp_path: Path) -> None:
    path = tmp_path / "profiles.json"

    def scheduler() -> LiveScheduler:
        settings = DiscoSettings(persist_profiles=True, profile_path=path)
        return LiveScheduler(settings, policy_from_name("generalized", Budget(share=0.5)))

    first = scheduler()
    for turn in range(1, 12):
        messages = _chat(turn)
        prompt = 40 * len(messages)
        query = first.server_prefix_query(prompt_prefixes(messages, PARAMS, prompt))
        _report_like_outcome(first, query, prompt, query.match.shared_tokens)
    learned = first.server_cache.rate(0.0)
    assert learned > 0.8
    # Another process sharing the file learns a provider that caches nothing, and saves.
    other = scheduler()
    assert other.profiles.server_cache.rate(0.0) == 0.0  # loaded before the first one saved
    first.save()
    for turn in range(1, 4):
        messages = _chat(turn)
        prompt = 40 * len(messages)
        query = other.server_prefix_query(prompt_prefixes(messages, PARAMS, prompt))
        _report_like_outcome(other, query, prompt, 0)
    other.save()
    # A restart reads both processes' reports: neither overwrote the other's.
    restarted = scheduler()
    rate = restarted.profiles.server_cache.rate(0.0)
    assert restarted.server_cache.rate(0.0) == rate  # what dispatch asks is what was loaded
    assert 0.0 < rate < learned
    assert rate == pytest.approx(other.server_cache.rate(0.0))
    # The prompts themselves are not kept across restarts: a provider holds them for minutes.
    messages = _chat(11)
    query = restarted.server_prefix_query(prompt_prefixes(messages, PARAMS, 40 * len(messages)))
    assert query.match.shared_tokens == 0
