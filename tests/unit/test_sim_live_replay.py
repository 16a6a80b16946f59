"""The simulator's live-replay inputs: a learned device, a given server pool, a paired server
replay, the answer cap the policies are told, and a device prefill that cannot be interrupted."""

from __future__ import annotations

import pytest

from langchain_disco.scheduling import Budget, LocalOnly, Race, RemoteOnly
from langchain_disco.scheduling.profiles import DeviceProfile, Profiles
from langchain_disco.sim import SimConfig, SimDevice, Simulator
from langchain_disco.sim.trace import Trace


def learned_device() -> DeviceProfile:
    return DeviceProfile("learned", overhead_s=0.05, prefill_tok_s=200.0, decode_tok_s=40.0)


def trace(prompts: tuple[int, ...], gap_s: float = 10.0, output: int = 16) -> Trace:
    return Trace(
        arrival_s=tuple(i * gap_s for i in range(len(prompts))),
        prompt_tokens=prompts,
        output_tokens=(output,) * len(prompts),
    )


def test_a_learned_device_is_its_profile_line_with_the_measured_spread() -> None:
    profile = learned_device()
    alone = SimDevice.learned(profile)
    assert alone.ratios == (1.0,) and alone.decode_tok_s == (40.0,)
    assert alone.mean_prefill_s(300) == pytest.approx(0.05 + 300 / 200)

    noisy = SimDevice.learned(profile, [(100, 0.55 * 0.9), (100, 0.55 * 1.3)])
    assert sum(noisy.ratios) / len(noisy.ratios) == pytest.approx(1.0)
    assert noisy.ratios[1] / noisy.ratios[0] == pytest.approx(1.3 / 0.9)


def test_local_only_ttft_is_the_learned_line() -> None:
    config = SimConfig(device_model=SimDevice.learned(learned_device()), n_devices=1)
    result = Simulator(trace((100, 400)), config).run(LocalOnly())
    assert result.ttft_s == pytest.approx([0.05 + 0.5, 0.05 + 2.0])


def test_the_server_is_replayed_where_given_and_drawn_from_the_pool_elsewhere() -> None:
    pool = ((0.7, 0.02),)
    config = SimConfig(
        n_devices=1, server_pool=pool, server_replay=((0.3, 0.01), None, (1.9, 0.03))
    )
    result = Simulator(trace((50, 50, 50)), config).run(RemoteOnly())
    assert result.ttft_s == pytest.approx([0.3, 0.7, 1.9])
    # Replaying some requests leaves every other draw where it was.
    plain = Simulator(trace((50, 50, 50)), SimConfig(n_devices=1, server_pool=pool))
    assert plain.prefill_s == Simulator(trace((50, 50, 50)), config).prefill_s


def test_a_replay_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(ValueError, match="2 entries for 3 requests"):
        Simulator(trace((1, 2, 3)), SimConfig(server_replay=((0.1, 0.01), None)))


def test_policies_are_told_the_answer_cap() -> None:
    seen: list[int | None] = []

    class Spy(LocalOnly):
        def plan(self, request, ctx=None):  # type: ignore[no-untyped-def]
            seen.append(request.max_tokens)
            return super().plan(request, ctx)

    config = SimConfig(device_model=SimDevice.learned(learned_device()), max_tokens=16)
    Simulator(trace((10, 20)), config).run(Spy())
    assert seen == [16, 16]


def uninterruptible(flag: bool) -> SimConfig:
    return SimConfig(
        device_model=SimDevice.learned(learned_device()),
        n_devices=1,
        server_pool=((0.5, 0.01),),
        device_prefill_interruptible=flag,
    )


def test_a_device_that_cannot_stop_its_prefill_delays_the_next_request_and_bills_it_all() -> None:
    # Request 0 (1000 tokens, 5.05 s prefill) loses its race at 0.5 s; request 1 comes at 1 s.
    replay = trace((1000, 20), gap_s=1.0)
    budget = Budget(share=0.5, resource="unified")
    stops = Simulator(replay, uninterruptible(True)).run(Race(), budget, profiles=priors())
    keeps = Simulator(replay, uninterruptible(False)).run(Race(), budget, profiles=priors())

    assert stops.winner == ["remote", "local"]
    assert keeps.winner == ["remote", "remote"]
    # Request 1's device answers at 0.15 s on an idle device; behind the prefill it cannot.
    assert stops.ttft_s[1] == pytest.approx(0.15)
    assert keeps.ttft_s[1] == pytest.approx(0.5)
    assert keeps.device_j[0] == pytest.approx(0.01 * 1000)  # the whole prefill
    assert stops.device_j[0] == pytest.approx(0.01 * 1000 * 0.5 / 5.05)  # the part it ran
    assert keeps.device_j[1] == 0  # request 1's device never began


def priors() -> Profiles:
    return Profiles.prior("2-core x86 cloud VM", "lepton-7b")
