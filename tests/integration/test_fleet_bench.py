"""The fleet benchmark at a small size: two real worker processes on one real redis-server keep
the fleet on budget and serve every request, through a Redis restart too."""

from __future__ import annotations

import pytest

from langchain_disco.bench._convergence import run_convergence
from langchain_disco.bench._fleet import run_fleet
from tests._redis import require_redis_server

pytestmark = pytest.mark.redis

REQUESTS = 600
RATE_PER_S = 200.0  # a 3 s run: several ledger syncs (every 0.5 s) per worker
MODEL_REQUESTS = 400
MODEL_RATE_PER_S = 80.0  # a 5 s run of DiscoChatModel workers (profile syncs every 2 s)


def test_two_workers_sharing_one_ledger_track_the_budget_and_serve_every_request() -> None:
    result = run_fleet(
        2, REQUESTS, rate_per_s=RATE_PER_S, redis_server_binary=str(require_redis_server())
    )
    assert result.served == REQUESTS
    assert result.ledger_n == REQUESTS  # every settled request reached Redis, once
    assert abs(result.error) <= 0.10
    assert result.states == "fleet"
    assert all(r.round_trips > 0 for r in result.reports)


def test_a_redis_restart_mid_run_loses_no_request() -> None:
    result = run_fleet(
        2,
        REQUESTS,
        rate_per_s=RATE_PER_S,
        restart=True,
        redis_server_binary=str(require_redis_server()),
    )
    assert result.served == REQUESTS
    assert any(r.failed_syncs > 0 for r in result.reports)  # the outage was seen
    assert result.states == "fleet"  # ... and every worker came back to the fleet's totals
    assert result.ledger_n == REQUESTS  # pushed after the restart, none counted twice


def test_a_new_worker_with_the_fleets_profiles_predicts_well_from_its_first_request() -> None:
    shared, alone = run_convergence(2_000, 10, redis_server_binary=str(require_redis_server()))
    assert (shared.worker, alone.worker) == ("shared", "alone")
    assert shared.device_error[0] < 0.1  # the fleet's line, at once
    assert alone.device_error[0] > 10 * shared.device_error[0]  # the prior's, 36x too slow
    assert shared.server_error[0] < alone.server_error[0] / 2


def test_two_model_workers_serve_every_request_on_budget_through_a_restart() -> None:
    # Real DiscoChatModels (generalized, shared ledger and profiles) over echo endpoints.
    result = run_fleet(
        2,
        MODEL_REQUESTS,
        rate_per_s=MODEL_RATE_PER_S,
        restart=True,
        serve="model",
        redis_server_binary=str(require_redis_server()),
    )
    assert result.failed == 0
    assert result.served == MODEL_REQUESTS
    assert result.ledger_n == MODEL_REQUESTS  # every settled request reached Redis, once
    assert any(r.failed_syncs > 0 for r in result.reports)  # the outage was seen
    assert result.states == "fleet"
    assert 0 < result.server_won < MODEL_REQUESTS  # both sides answered first, some of the time
    # Tracking takes longer than 200 requests a worker to settle (the benchmark runs 20,000):
    # here, that the spend the workers settled is in their shared totals.
    assert result.realised_share > 0
