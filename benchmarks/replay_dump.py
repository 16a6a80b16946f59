"""Prove a refactor of the replay changed no behaviour: dump every request's outcome, compare.

    .venv/bin/python benchmarks/replay_dump.py dump before.json   # on the old code
    .venv/bin/python benchmarks/replay_dump.py dump after.json    # on the new code
    .venv/bin/python benchmarks/replay_dump.py compare before.json after.json

The dump holds, per request, the TTFT, spend, winner and action of every budgeted policy in every
regime at 30% and 90% device utilisation and budgets 0.1, 0.5, 0.9, plus `generalized` with
token-level migration (eager and paced: migration token and added stall too): 102 runs of
`--requests` requests (1,500 by default, about 3 minutes). `compare` exits 1 and names each run
that differs in any value (floats compared exactly: a speed-up must not move a single bit).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from langchain_disco.bench._sim_options import REGIMES, SimOptions
from langchain_disco.scheduling import Budget, policy_from_name
from langchain_disco.scheduling.migration import CostAwareMigration
from langchain_disco.sim import Simulator, load_trace

POLICIES = ("random", "random_race", "length_threshold", "wait_time", "generalized")
UTILISATIONS = (0.3, 0.9)
BUDGETS = (0.1, 0.5, 0.9)
PACES = (None, 10.0)


def dump(requests: int) -> dict[str, list[Any]]:
    """Every run's per-request outcome, keyed regime/utilisation/budget/policy."""
    runs: dict[str, list[Any]] = {}
    for regime in REGIMES:
        for utilisation in UTILISATIONS:
            options = SimOptions(regime=regime, device_utilisation=utilisation)
            sim = Simulator(load_trace().repeat_to(requests), options.sim_config(0))
            resource = options.regime_spec.resource
            for b in BUDGETS:
                for name in POLICIES:
                    budget = Budget(share=b, resource=resource)
                    r = sim.run(policy_from_name(name, budget), budget)
                    runs[f"{regime}/{utilisation}/{b}/{name}"] = [
                        r.ttft_s,
                        r.spend,
                        r.winner,
                        r.action,
                    ]
            budget = Budget(share=0.5, resource=resource)
            for pace in PACES:
                r = sim.run(
                    policy_from_name("generalized", budget),
                    budget,
                    migration=CostAwareMigration(),
                    pace_tok_s=pace,
                )
                runs[f"{regime}/{utilisation}/migration/{pace}"] = [
                    r.ttft_s,
                    r.spend,
                    r.winner,
                    r.migration_token,
                    r.stall_added_s,
                ]
    return runs


def compare(before: Path, after: Path) -> int:
    """The number of runs that differ (each named on stdout)."""
    old = json.loads(before.read_text("utf-8"))
    new = json.loads(after.read_text("utf-8"))
    differ = [key for key in old if old[key] != new.get(key)]
    differ += [key for key in new if key not in old]
    for key in differ:
        print(f"differs: {key}")
    print(f"{len(old)} runs, {len(differ)} differ")
    return len(differ)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    take = commands.add_parser("dump", help="replay everything and write the outcomes")
    take.add_argument("out", type=Path)
    take.add_argument("--requests", type=int, default=1500)
    check = commands.add_parser("compare", help="exit 1 if two dumps differ at all")
    check.add_argument("before", type=Path)
    check.add_argument("after", type=Path)
    args = parser.parse_args()
    if args.command == "dump":
        args.out.write_text(json.dumps(dump(args.requests)), "utf-8")
        return
    sys.exit(1 if compare(args.before, args.after) else 0)


if __name__ == "__main__":
    main()
