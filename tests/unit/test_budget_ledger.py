"""The budget controller reads settled totals from a ledger when it has one, and is exactly
the in-process controller when it has none (or the ledger has no fleet view)."""

from __future__ import annotations

import random

import pytest

from langchain_disco.scheduling.budget import Budget, BudgetController, LedgerTotals
from langchain_disco.state import Buckets, InProcessLedger, redact_url


class _NoFleetView:
    """A ledger that is never reachable: the controller must fall back to its own totals."""

    def __init__(self) -> None:
        self.added: list[LedgerTotals] = []

    def add(self, delta: LedgerTotals) -> None:
        self.added.append(delta)

    def totals(self) -> LedgerTotals | None:
        return None

    def peers(self) -> float:
        return 1.0


def _drive(controller: BudgetController, seed: int, n: int = 500) -> list[float]:
    rng = random.Random(seed)
    shares = []
    for i in range(n):
        key = object()
        floor, ceiling = rng.uniform(0, 0.2), rng.uniform(0.5, 2.0)
        share = controller.target_share()
        shares.append(share)
        controller.commit(key, floor + share * (ceiling - floor), floor, ceiling)
        if i % 3:
            controller.record(rng.uniform(floor, ceiling), floor, ceiling, key=key)
    return shares


def test_a_ledger_without_a_fleet_view_leaves_every_decision_bit_for_bit_the_same() -> None:
    plain = BudgetController(Budget(share=0.3))
    fallback = BudgetController(Budget(share=0.3))
    fallback.ledger = _NoFleetView()
    assert _drive(plain, seed=7) == _drive(fallback, seed=7)
    assert plain.deficit == fallback.deficit
    assert plain.realised_share == fallback.realised_share


def test_every_settled_request_is_added_to_the_ledger() -> None:
    controller = BudgetController(Budget(share=0.5))
    ledger = _NoFleetView()
    controller.ledger = ledger
    controller.record(1.0, 0.0, 4.0)
    assert ledger.added == [LedgerTotals(1.0, 1.0, 2.0, 0.0, 4.0)]


def test_two_controllers_sharing_a_ledger_see_each_others_spend() -> None:
    ledger = InProcessLedger()
    a, b = BudgetController(Budget(share=0.5)), BudgetController(Budget(share=0.5))
    a.ledger = b.ledger = ledger
    a.record(4.0, 0.0, 4.0)  # a overspent: allowance 2, spend 4
    assert b.deficit == -2.0
    assert b.target_share() < 0.5  # b spends less to repay the fleet's debt
    assert b.realised_share == 1.0


class _Fleet:
    """A fleet view of `peers` workers' worth of traffic, with a fixed settled deficit."""

    def __init__(self, peers: float) -> None:
        self._peers = peers

    def add(self, delta: LedgerTotals) -> None:
        pass

    def totals(self) -> LedgerTotals | None:
        return LedgerTotals(n=1_000.0, spent=120.0, allowed=100.0, floor=0.0, ceiling=1_000.0)

    def peers(self) -> float:
        return self._peers


def test_each_of_n_workers_repays_one_nth_of_the_fleets_deficit() -> None:
    shares = []
    for peers in (1.0, 8.0):
        controller = BudgetController(Budget(share=0.1), horizon=200.0)
        controller.ledger = _Fleet(peers)
        shares.append(controller.target_share())
    one, eight = (0.1 - share for share in shares)
    assert one == pytest.approx(20.0 / (200.0 * 1.0))  # deficit 20 over horizon x headroom 1
    assert eight == pytest.approx(one / 8.0)  # together the fleet repays at one worker's rate


def test_the_window_forgets_buckets_older_than_its_length() -> None:
    buckets = Buckets(bucket_s=10.0, window_buckets=3)
    buckets.add(5.0, LedgerTotals(n=1, spent=1.0))  # bucket 0
    buckets.add(25.0, LedgerTotals(n=1, spent=2.0))  # bucket 2
    assert buckets.total(29.0).spent == 3.0  # buckets 0..2
    assert buckets.total(30.0).spent == 2.0  # buckets 1..3: bucket 0 left the window


def test_a_urls_password_is_redacted_and_the_rest_kept() -> None:
    assert redact_url("redis://u:hunter2@h:6379/0") == "redis://u:***@h:6379/0"
    assert redact_url("redis://:hunter2@h:6379/0") == "redis://:***@h:6379/0"
    assert redact_url("redis://h:6379/0") == "redis://h:6379/0"
