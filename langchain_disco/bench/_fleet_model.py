"""The fleet benchmark's model workers: real `DiscoChatModel`s over echo endpoints (issue 18).

Where `_fleet`'s rule workers decide with the `random_race` rule, each worker here is what an
app's worker process runs: one `DiscoChatModel` on the `generalized` policy with a budget on
server spend, wired to the fleet exactly as `DISCO_STATE_URL` wires it (the shared budget
ledger and the shared learned profiles, with this machine's device identity), streaming every
request of its share of the arrival stream through the whole engine (dispatch, race,
cancellation, the report, learning). Only the endpoints are stand-ins, so that a 2-core machine
can serve thousands of requests a minute: in-process echo generators whose first token comes
after a request-dependent delay.

- the device: a prefill at `DEVICE_PREFILL_TOK_S` tokens/s of the prompt (the echo's count of
  its characters / 4), no queue (requests prefill side by side);
- the server: the TTFT drawn for the request (lognormal, `SERVER_TTFT_MEDIAN_S`, drawn once for
  the stream, so every run sees the same draws), found by the request number the prompt starts
  with;
- both decode `DECODE_TOK_S` tokens/s; an answer is the trace's output length capped at
  `OUTPUT_CAP` tokens (the request's ``max_tokens``).

These times are the simulator's regime scaled down ten times: the budget is a share of spend,
so its tracking does not depend on the time scale, and the machine keeps up with the stream.
"""

from __future__ import annotations

import asyncio
import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.queues import Queue
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.messages import BaseMessage

from langchain_disco.testing.echo import EchoEndpoint

if TYPE_CHECKING:
    from langchain_disco.bench._fleet import Job, WorkerReport

POLICY = "generalized"
RATE_PER_S = 100.0
DEVICE_PREFILL_TOK_S = 5_000.0
SERVER_TTFT_MEDIAN_S = 0.06
SERVER_TTFT_SIGMA = 0.5
DECODE_TOK_S = 1_000.0
OUTPUT_CAP = 16
DEVICE_ID = "bench-machine"
"""Every worker runs on this one machine: they share its device line, as a host's workers do."""
READY_TIMEOUT_S = 120.0


class PrefillEcho(EchoEndpoint):
    """The device: the first token after the prompt's prefill at `prefill_tok_s`."""

    def __init__(self, prefill_tok_s: float) -> None:
        super().__init__(tok_s=DECODE_TOK_S, name="device")
        self.prefill_tok_s = prefill_tok_s

    def first_token_delay_s(self, messages: Sequence[BaseMessage], input_tokens: int) -> float:
        return input_tokens / self.prefill_tok_s


class DrawnEcho(EchoEndpoint):
    """The server: the first token after the TTFT drawn for the request's number."""

    def __init__(self, ttft_s: Sequence[float]) -> None:
        super().__init__(tok_s=DECODE_TOK_S, name="server", kind="remote")
        self.drawn_s = tuple(ttft_s)

    def first_token_delay_s(self, messages: Sequence[BaseMessage], input_tokens: int) -> float:
        number = str(messages[-1].content).split(" ", 1)[0]
        return self.drawn_s[int(number.removeprefix("r"))]


def prompt_text(j: int, tokens: int) -> str:
    """Request `j`'s prompt: its number, then filler to `tokens` tokens of 4 characters."""
    head = f"r{j} "
    return head + "word " * max(0, (4 * tokens - len(head)) // 5)


def server_draws(n: int, seed: int) -> list[float]:
    import random

    draws = random.Random(seed)
    return [
        draws.lognormvariate(math.log(SERVER_TTFT_MEDIAN_S), SERVER_TTFT_SIGMA) for _ in range(n)
    ]


def serve_model(
    job: Job, ready: Barrier, start_at: Synchronized[float], out: Queue[WorkerReport]
) -> None:
    """One worker process: its DiscoChatModel, then its requests at their arrival times."""
    from langchain_disco import DiscoChatModel
    from langchain_disco.bench._fleet import WorkerReport
    from langchain_disco.scheduling.budget import BudgetController

    with tempfile.TemporaryDirectory(prefix="disco-fleet-") as tmp:
        model = DiscoChatModel(
            policy=POLICY,
            budget=job.share,
            budget_resource="server",
            state_url=job.url,
            state_namespace=job.namespace,
            device_id=DEVICE_ID,
            persist_profiles=True,
            profile_path=Path(tmp) / "profiles.json",
            local=PrefillEcho(DEVICE_PREFILL_TOK_S),
            remote=DrawnEcho(job.server_ttft_s),
        )
        scheduler = model.scheduler
        controller = getattr(scheduler.policy, "controller", None)
        ledger, store = scheduler.ledger, scheduler.shared
        if not isinstance(controller, BudgetController) or ledger is None or store is None:
            raise RuntimeError(f"the {POLICY} model is not wired to the fleet's state")
        ready.wait(timeout=READY_TIMEOUT_S)
        ready.wait(timeout=READY_TIMEOUT_S)
        served = asyncio.run(_serve(model, job, start_at.value))
        ledger.sync_now()  # push what is pending now: the state reported is the end's
        state = ledger.state
        round_trips = ledger.syncs + store.pulls + store.saves + store.conflicts
        failed_syncs = ledger.failures
        scheduler.close()
    out.put(
        WorkerReport.settled(
            job.worker,
            controller,
            ttft_sum_s=served.ttft_sum_s,
            round_trips=round_trips,
            failed_syncs=failed_syncs,
            state=state,
            behind_s=served.behind_s,
            failed=served.failed,
            server_won=served.server_won,
        )
    )


@dataclass
class _Served:
    ttft_sum_s: float = 0.0
    behind_s: float = 0.0
    failed: int = 0
    server_won: int = 0


async def _serve(model: Any, job: Job, t0: float) -> _Served:
    served = _Served()

    async def one(j: int, prompt: int, output: int) -> None:
        last = None
        try:
            async for chunk in model.astream(prompt_text(j, prompt), max_tokens=output):
                last = chunk
        except Exception:  # counted: the benchmark's claim is that none fails
            served.failed += 1
            return
        report = last.response_metadata["disco_report"] if last is not None else None
        if report is None or report.get("ttft_s") is None:
            served.failed += 1
            return
        served.ttft_sum_s += report["ttft_s"]
        served.server_won += report.get("winner") == "remote"

    tasks = []
    requests = zip(job.prompt_tokens, job.output_tokens, strict=True)
    for j, (prompt, output) in enumerate(requests):
        due = t0 + (job.worker + j * job.workers) / job.rate_per_s
        wait_s = due - time.time()
        if wait_s > 0:
            await asyncio.sleep(wait_s)  # the arrival schedule: this request is not due yet
        else:
            served.behind_s = max(served.behind_s, -wait_s)
        tasks.append(asyncio.create_task(one(j, prompt, min(output, OUTPUT_CAP))))
    await asyncio.gather(*tasks)
    return served
