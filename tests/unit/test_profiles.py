"""Latency and length profiles: priors from the bundled data, online learning, persistence."""

from __future__ import annotations

import itertools
import json
import logging
import math
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from langchain_disco.errors import ConfigError
from langchain_disco.scheduling import (
    Cost,
    DeviceProfile,
    EndpointOutcome,
    LengthProfile,
    Plan,
    Profiles,
    ProfileStore,
    RequestFeatures,
    RequestOutcome,
    ServerProfile,
    Start,
)
from langchain_disco.scheduling.empirical import Reservoir
from langchain_disco.scheduling.store import FORMAT_VERSION, default_profiles_path

# -- the empirical reservoir ---------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(0.0, 100.0), min_size=1, max_size=40),
    st.floats(-1.0, 120.0),
    st.floats(-1.0, 120.0),
)
def test_reservoir_statistics_match_brute_force(xs: list[float], a: float, b: float) -> None:
    r = Reservoir(xs)
    n = len(xs)
    assert r.cdf(a) == pytest.approx(sum(x < a for x in xs) / n)
    assert r.expected_min(a) == pytest.approx(sum(min(x, a) for x in xs) / n, abs=1e-9)
    lo, hi = min(a, b), max(a, b)
    mass, moment = r.partial(lo, hi)
    inside = [x for x in xs if lo <= x < hi]
    assert mass == pytest.approx(len(inside) / n)
    assert moment == pytest.approx(sum(inside) / n, abs=1e-9)
    assert r.quantile(0.5) in xs


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(0.0, 1e6), min_size=1, max_size=24),
    st.lists(st.tuples(st.floats(0.0, 1e6), st.booleans()), max_size=200),
    st.integers(1, 16),
)
def test_reservoir_views_after_adds_are_bit_for_bit_a_fresh_sort(
    prior: list[float], adds: list[tuple[float, bool]], capacity: int
) -> None:
    """The sorted copy and prefix sums are updated incrementally between queries; they must
    equal, bit for bit, what sorting and summing the held samples afresh gives."""
    r = Reservoir(prior, capacity=capacity, seed=3)
    r.view()
    for x, query in adds:
        r.add(x)
        if query:
            xs, prefix = r.view()
            fresh = sorted(r.to_dict()["samples"])
            assert xs == fresh
            assert prefix == list(itertools.accumulate(fresh, initial=0.0))
    xs, prefix = r.view()
    assert prefix == list(itertools.accumulate(sorted(r.to_dict()["samples"]), initial=0.0))


def test_reservoir_is_bounded_seeded_and_forgets_its_prior() -> None:
    def fill(seed: int) -> Reservoir:
        r = Reservoir([0.0] * 64, capacity=64, seed=seed)
        for i in range(1000):
            r.add(1.0 + i % 7)
        return r

    a, b = fill(1), fill(1)
    assert len(a) == 64
    assert a.samples == b.samples
    assert a.samples != fill(2).samples
    assert a.quantile(0.01) >= 1.0  # the prior zeros have all been replaced


# -- device --------------------------------------------------------------------------------


def test_device_priors_come_from_the_measured_rows() -> None:
    m1 = DeviceProfile.prior("MacBook Pro M1 Max")
    assert m1.prefill_tok_s == pytest.approx(499.58)
    assert m1.decode_tok_s == pytest.approx(46.2)
    phone = DeviceProfile.prior("Galaxy S25")
    # Fitted from 36 runs at 128/512/1024 prompt tokens: about 20 ms per prompt token.
    assert 30 < phone.prefill_tok_s < 70
    assert phone.overhead_s >= 0
    assert 1.5 < phone.predict_ttft_s(128) < 4.0
    assert 15 < phone.predict_ttft_s(1024) < 30
    assert 8 < phone.decode_tok_s < 25
    vm = DeviceProfile.prior("2-core x86 cloud VM")
    assert vm.prefill_tok_s == pytest.approx(560)


def test_unknown_device_prior_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="Galaxy S25"):
        DeviceProfile.prior("Nokia 3310")


def test_device_prediction_grows_with_the_prompt_and_adds_the_queue_wait() -> None:
    d = DeviceProfile.prior("Galaxy S25")
    assert d.predict_ttft_s(100) < d.predict_ttft_s(1000) < d.predict_ttft_s(4000)
    assert d.predict_ttft_s(500, queue_wait_s=3.0) == pytest.approx(d.predict_ttft_s(500) + 3.0)


def test_device_profile_replaces_its_prior_with_what_it_measures() -> None:
    d = DeviceProfile.prior("Galaxy S25")  # ~45 tok/s, no overhead
    rng = random.Random(0)
    for _ in range(60):  # a faster device: 0.3 s overhead, 400 tok/s, 5% noise
        prompt = rng.randint(50, 3000)
        ttft = (0.3 + prompt / 400) * rng.uniform(0.95, 1.05)
        d.observe(prompt, ttft, decode_tok_s=30.0)
    assert d.prefill_tok_s == pytest.approx(400, rel=0.15)
    assert d.overhead_s == pytest.approx(0.3, abs=0.15)
    assert d.predict_ttft_s(2000) == pytest.approx(0.3 + 2000 / 400, rel=0.05)
    assert d.decode_tok_s == pytest.approx(30.0, rel=0.05)


def test_device_fit_weighs_relative_error_so_short_prompts_are_predicted_too() -> None:
    # A phone-like device whose speed varies by tens of percent from one request to the next,
    # on mostly long prompts: unweighted, their seconds of noise set the intercept and short
    # prompts (the ones a device wins races on) come out tens of percent off.
    truth = DeviceProfile("truth", overhead_s=0.1, prefill_tok_s=45.0, decode_tok_s=10.0)
    errors = []
    for seed in range(5):
        d = DeviceProfile.prior("Galaxy S25")
        rng = random.Random(seed)
        for _ in range(300):
            prompt = int(math.exp(rng.uniform(math.log(20), math.log(4000))))
            d.observe(prompt, truth.predict_ttft_s(prompt) * rng.uniform(0.75, 1.35))
        errors += [d.predict_ttft_s(p) / (truth.predict_ttft_s(p) * 1.05) - 1 for p in (30, 2000)]
    assert max(abs(e) for e in errors) < 0.1, errors


def test_device_profile_never_predicts_a_negative_overhead() -> None:
    d = DeviceProfile.prior("MacBook Pro M1 Max")
    for prompt in (10, 20, 2000, 4000):  # superlinear: a line through these dips below 0
        d.observe(prompt, 1e-4 * prompt**1.5)
    assert d.overhead_s >= 0
    assert d.predict_ttft_s(1) > 0


# -- server --------------------------------------------------------------------------------


def test_server_prior_replays_the_provider_measurements() -> None:
    s = ServerProfile.prior("together-13b")
    assert len(s.ttft) == 149
    assert s.quantile(0.5) == pytest.approx(0.55, abs=0.05)
    assert s.quantile(0.995) > 50  # the heavy tail
    assert s.cdf(0.0) == 0.0
    assert s.p_first(1000.0) == 1.0
    assert s.expected_min_with(0.0) == 0.0
    assert s.expected_min_with(1e9) == pytest.approx(s.mean_ttft_s)
    assert 20 < s.decode_tok_s < 200
    pooled = ServerProfile.prior("all")
    assert len(pooled.ttft) == 512


def test_unknown_server_prior_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="together-13b"):
        ServerProfile.prior("openai-gpt9")


def test_server_profile_learns_a_new_distribution() -> None:
    s = ServerProfile.prior("anyscale-7b", capacity=128)
    for _ in range(1000):
        s.observe(3.0, decode_tok_s=10.0)
    assert s.quantile(0.05) == 3.0
    assert s.decode_tok_s == pytest.approx(10.0, rel=0.05)


def test_censored_server_observations_keep_the_tail() -> None:
    s = ServerProfile.prior("replicate-70b", seed=3)
    before = s.cdf(10.0)
    for _ in range(200):
        s.observe_censored(10.0)  # cancelled after 10 s: S >= 10 s
    assert s.cdf(10.0) < before
    assert min(s.ttft.samples[-1:]) >= 0


def test_server_buckets_answer_once_they_have_enough_samples() -> None:
    s = ServerProfile.prior("anyscale-7b", bucket_edges=(1000,))
    long_dist = s.distribution(5000)
    assert long_dist is s.ttft  # not enough long-prompt samples yet: the pooled one
    for _ in range(40):
        s.observe(9.0, prompt_tokens=5000)
    assert s.distribution(5000) is not s.ttft
    assert s.quantile(0.5, prompt_tokens=5000) == 9.0
    assert s.quantile(0.5, prompt_tokens=10) < 1.0


# -- lengths -------------------------------------------------------------------------------


def test_output_length_prior_is_the_azure_trace() -> None:
    out = LengthProfile.output_prior()
    assert 150 < out.expected() < 280  # trace mean 211
    assert out.expected(max_tokens=50) <= 50
    assert out.expected_remaining(100) > 50
    assert out.expected_remaining(100, max_tokens=120) <= 20
    prompts = LengthProfile.prompt_prior()
    assert 800 < prompts.expected() < 1500  # trace mean 1155


def test_expected_remaining_is_the_mean_residual() -> None:
    lengths = LengthProfile([10, 20, 30, 40])
    assert lengths.expected_remaining(15) == pytest.approx((5 + 15 + 25) / 3)
    assert lengths.expected_remaining(40) == 1.0  # longer than anything seen


# -- feeding an outcome --------------------------------------------------------------------


def _outcome(endpoints: tuple[EndpointOutcome, ...], winner: str, ttft: float) -> RequestOutcome:
    return RequestOutcome(
        request=RequestFeatures(prompt_tokens=1000),
        plan=Plan((Start("local"), Start("remote")), action="race"),
        endpoints=endpoints,
        winner=winner,  # type: ignore[arg-type]
        ttft_s=ttft,
        output_tokens=77,
        cost=Cost(),
    )


def test_profiles_learn_from_a_race_the_server_won() -> None:
    p = Profiles.prior("MacBook Pro M1 Max", "anyscale-7b")
    n_server = p.server.ttft.n_seen
    outcome = _outcome(
        (
            EndpointOutcome("local", 0.0, None, 0.4, input_tokens=1000),
            EndpointOutcome("remote", 0.0, 0.4, 3.0, input_tokens=1000, output_tokens=77),
        ),
        "remote",
        0.4,
    )
    p.observe(outcome)
    assert p.server.ttft.n_seen == n_server + 1
    assert 0.4 in p.server.ttft.samples
    assert p.device.n_ttft == 0  # cancelled: its TTFT is unknown
    assert 77 in p.output_lengths.tokens.samples


def test_profiles_learn_device_ttft_without_its_queue_wait() -> None:
    p = Profiles.prior("MacBook Pro M1 Max", "anyscale-7b")
    outcome = _outcome(
        (
            EndpointOutcome("local", 0.0, 5.0, 9.0, queue_wait_s=3.0, output_tokens=77),
            EndpointOutcome("remote", 0.0, None, 5.0),
        ),
        "local",
        5.0,
    )
    p.observe(outcome)
    assert p.device.n_ttft == 1
    assert p.device.predict_ttft_s(1000) < 3.0  # learned ~2 s, not 5 s
    # The cancelled server is a censored observation: S >= 5 s.
    assert max(p.server.ttft.samples) >= 5.0 or 5.0 in p.server.ttft.samples


# -- persistence ---------------------------------------------------------------------------


def test_one_improbable_race_win_moves_the_device_line_at_most_half_way() -> None:
    # The device won a race the server "could not" lose (slower than every server sample):
    # its inverse-probability weight is bounded by half the fit's memory, so the line moves
    # less than half way to this one observation instead of jumping to it.
    rng = random.Random(0)
    truth = DeviceProfile("truth", overhead_s=0.2, prefill_tok_s=60.0, decode_tok_s=10.0)
    p = Profiles(
        device=DeviceProfile("d", overhead_s=0.2, prefill_tok_s=60.0, decode_tok_s=10.0),
        server=ServerProfile("s", [rng.uniform(0.2, 1.0) for _ in range(512)], capacity=512),
        output_lengths=LengthProfile.output_prior(),
        prompt_lengths=LengthProfile.prompt_prior(),
    )
    for _ in range(400):
        prompt = rng.randint(20, 1500)
        p.device.observe(prompt, truth.predict_ttft_s(prompt) * rng.uniform(0.8, 1.2))
    before = p.device.predict_ttft_s(600)
    device_ttft = 2 * truth.predict_ttft_s(600)
    end = 0.5 + device_ttft
    plan = Plan((Start("remote"), Start("local", at_s=0.5)), action="remote-then-local")
    p.observe(
        RequestOutcome(
            request=RequestFeatures(prompt_tokens=600),
            plan=plan,
            endpoints=(
                EndpointOutcome("remote", 0.0, None, end, input_tokens=600),
                EndpointOutcome("local", 0.5, end, end + 5, output_tokens=50, decode_tok_s=10.0),
            ),
            winner="local",
            ttft_s=end,
            output_tokens=50,
            cost=Cost(),
        )
    )
    moved = (p.device.predict_ttft_s(600) - before) / (device_ttft - before)
    assert 0.0 < moved < 0.5
    assert p.device.max_weight == pytest.approx(100.0)


def test_profile_store_round_trips(tmp_path: Path) -> None:
    store = ProfileStore(tmp_path / "sub" / "profiles.json")
    profiles = Profiles.prior("Galaxy S25", "together-13b", server_bucket_edges=(2048,))
    profiles.device.observe(500, 4.0, 20.0)
    profiles.server.observe(0.3, 80.0, 3000)
    store.save(profiles)
    loaded = store.load()
    assert loaded.to_dict() == profiles.to_dict()
    assert loaded.device.predict_ttft_s(700) == pytest.approx(profiles.device.predict_ttft_s(700))
    assert json.loads(store.path.read_text())["version"] == FORMAT_VERSION


def test_missing_store_gives_priors(tmp_path: Path) -> None:
    store = ProfileStore(tmp_path / "none.json", fallback=lambda: Profiles.prior("Galaxy S25"))
    assert store.load().device.name == "Galaxy S25"


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        json.dumps({"version": FORMAT_VERSION, "profiles": {"device": {}}}),
        json.dumps([1, 2, 3]),
    ],
)
def test_corrupt_store_warns_and_falls_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: str
) -> None:
    path = tmp_path / "profiles.json"
    path.write_text(content)
    with caplog.at_level(logging.WARNING):
        profiles = ProfileStore(path).load()
    assert isinstance(profiles, Profiles)
    assert "using priors" in caplog.text


def test_old_version_store_warns_and_falls_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "profiles.json"
    data = {"version": 0, "profiles": Profiles.prior().to_dict()}
    path.write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING):
        ProfileStore(path).load()
    assert "format version 0" in caplog.text


def test_default_store_lives_in_the_user_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr("sys.platform", "linux")
    assert default_profiles_path() == tmp_path / "langchain-disco" / "profiles.json"


def test_device_spread_starts_from_the_measured_rows_and_learns_unselected_ttfts() -> None:
    device = DeviceProfile.prior("Galaxy S25")
    prior = device.spread()
    assert min(prior) < 1.0 < max(prior)  # several measured rows scatter around the line
    assert sum(prior) / len(prior) == pytest.approx(1.0, abs=0.1)
    device.observe(500, 3.0 * device.predict_ttft_s(500), selected=True)  # beat a racing server
    assert device.spread() == prior
    rng = random.Random(0)
    for _ in range(300):
        prompt = rng.randint(100, 2000)
        truth = 0.1 + prompt / 40
        device.observe(prompt, truth * rng.choice((0.8, 1.2)))
    learned = device.spread()
    assert learned != prior
    assert learned[0] == pytest.approx(0.8, abs=0.05)
    assert learned[-1] == pytest.approx(1.2, abs=0.05)
    restored = DeviceProfile.from_dict(device.to_dict())
    assert restored.spread() == device.spread()


def test_a_file_with_the_old_spread_still_loads() -> None:
    device = DeviceProfile.prior("Galaxy S25")
    old = device.to_dict()
    del old["spread_prior"], old["spread_recent"]
    assert DeviceProfile.from_dict(old).spread() == [1.0] * 8  # older still: no spread at all
    old["spread"] = {"samples": [0.5, 2.0], "capacity": 256, "seed": 3, "n_seen": 2}
    assert sorted(set(DeviceProfile.from_dict(old).spread())) == [0.5, 2.0]


def test_device_spread_ignores_tiny_predictions_and_clips_misfits() -> None:
    device = DeviceProfile("d", overhead_s=0.0, prefill_tok_s=1000.0, decode_tok_s=10.0)
    for _ in range(20):
        device.observe(1000, 1.0)
    on_line = device.spread()
    device.observe(2, 0.4)  # predicted 2 ms: a ratio of 200 says nothing about spread
    assert max(device.spread()) <= max(on_line) * 1.01
    device = DeviceProfile("d", overhead_s=0.0, prefill_tok_s=1000.0, decode_tok_s=10.0)
    device.observe(1000, 50.0, weight=1e-9)  # 50x the line (barely learned): a misfit, clipped
    assert max(device.spread()) == 4.0


def test_a_wrong_prior_leaves_no_misfit_in_the_spread() -> None:
    """A phone started from a desktop GPU's prior: the first TTFTs are far off the prior line
    (clipped at 4x), but once the line is learned the spread is the phone's own noise. Ratios
    kept as they were measured never cleared (issue 16, item 4)."""
    device = DeviceProfile.prior("MacBook Pro M1 Max")
    rng = random.Random(1)
    for _ in range(300):
        prompt = int(math.exp(rng.uniform(math.log(20), math.log(4000))))
        device.observe(prompt, (0.5 + prompt / 30) * rng.uniform(0.9, 1.1))
    spread = device.spread()
    assert min(spread) > 0.85 and max(spread) < 1.15, spread


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 8000), st.floats(1e-3, 120.0), st.booleans()),
        min_size=0,
        max_size=300,
    ),
    st.sampled_from([4, 8, 16]),
    st.booleans(),
)
def test_device_spread_is_the_quantiles_of_ratios_to_the_current_line(
    observations: list[tuple[int, float, bool]], points: int, fast: bool
) -> None:
    """The spread, computed inline and cached for speed, is its definition: nearest-rank
    quantiles of the recent unselected TTFTs' ratios to the line as it is now (predictions under
    10 ms left out, clipped at 4x either way), the prior's ratios joining while fewer than 16."""
    device = (
        DeviceProfile("fast", overhead_s=0.0, prefill_tok_s=50_000.0, decode_tok_s=100.0)
        if fast  # predictions of a few ms for short prompts: some below the 10 ms cut
        else DeviceProfile.prior("Galaxy S25")
    )
    recent: list[tuple[int, float]] = []
    for prompt, seconds, selected in observations:
        ttft = seconds / 600 if fast else seconds
        device.observe(prompt, ttft, selected=selected)
        if not selected:
            recent = [*recent, (prompt, ttft)][-256:]
        ratios = [
            min(max(t / device.predict_ttft_s(p), 0.25), 4.0)
            for p, t in recent
            if device.predict_ttft_s(p) >= 0.01
        ]
        if len(ratios) < 16:
            ratios += device.to_dict()["spread_prior"]
        reference = Reservoir(ratios, capacity=len(ratios))
        expected = [reference.quantile((i + 0.5) / points) for i in range(points)]
        assert device.spread(points) == expected
