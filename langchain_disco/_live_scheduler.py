"""The live side of dispatch: the policy, the learned profiles, and what each request teaches.

`DiscoChatModel` owns one `LiveScheduler`. Per request it builds the policy's view of the request
(prompt size, the device queue), asks the policy for a plan, and afterwards turns the engine's
report into the same `RequestOutcome` the simulator produces, so the profiles and the budget
controller learn from live traffic exactly as they do in simulation.
"""

from __future__ import annotations

import atexit
import logging
import socket
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any

from langchain_disco.config import DiscoSettings
from langchain_disco.endpoints.base import Endpoint, PromptCacheView
from langchain_disco.errors import ConfigError
from langchain_disco.report import RequestReport
from langchain_disco.scheduling.budget import Budget, BudgetController
from langchain_disco.scheduling.cost import CostModel
from langchain_disco.scheduling.dispatch import (
    DispatchContext,
    DispatchPolicy,
    LocalOnly,
    Plan,
    Race,
    RemoteOnly,
    RequestFeatures,
    RequestOutcome,
    policy_for_mode,
)
from langchain_disco.scheduling.estimates import DeviceJob, predict_queue_wait_s
from langchain_disco.scheduling.policies import policy_from_name
from langchain_disco.scheduling.profiles import Profiles
from langchain_disco.scheduling.server_cache import (
    NO_MATCH,
    PrefixMatch,
    PromptPrefixes,
    ServerPrefixCache,
)
from langchain_disco.scheduling.store import ProfileStore

if TYPE_CHECKING:
    from langchain_disco.state._periodic import Periodic
    from langchain_disco.state.redis import RedisLedger
    from langchain_disco.state.redis_profiles import RedisProfileStore

logger = logging.getLogger(__name__)

SAVE_EVERY = 20
"""Persist the learned profiles every this many requests (and on `save_profiles`)."""
SHARE_EVERY_S = 2.0
"""With `DISCO_STATE_URL`: push what this worker learned and pull the fleet's this often."""
MAX_UNSAVED = 10_000
"""Outcomes kept for the next save while saving fails (a read-only cache directory, a lock
held elsewhere); beyond it the oldest are left out of the file (never out of memory)."""


@dataclass(frozen=True)
class ServerPrefixQuery:
    """A request's prompt prefixes, when it was planned, and what the server was expected to
    hold of them: what `LiveScheduler.learn` needs to remember the prompt and learn the rate."""

    prefixes: PromptPrefixes
    at_s: float
    match: PrefixMatch = NO_MATCH


def cost_model_from(s: DiscoSettings) -> CostModel:
    return CostModel(
        price_in_per_mtok=s.price_in_per_mtok,
        price_out_per_mtok=s.price_out_per_mtok,
        price_cached_in_per_mtok=s.price_cached_in_per_mtok,
        energy_prefill_j_per_token=s.device_energy_prefill_j_per_token,
        energy_decode_j_per_token=s.device_energy_decode_j_per_token,
        usd_per_j=s.usd_per_j,
    )


def policy_from_settings(s: DiscoSettings) -> DispatchPolicy:
    """`DISCO_POLICY` (with `DISCO_BUDGET`), else the baseline behind `DISCO_MODE`."""
    if s.policy is None:
        return policy_for_mode(s.mode)
    budget = None
    if s.budget is not None or s.budget_resource is not None:
        resource = s.budget_resource or _default_resource(s.policy)
        budget = Budget(share=0.5 if s.budget is None else s.budget, resource=resource)
    return policy_from_name(s.policy, budget)


def _default_resource(policy: str) -> Any:
    return {"length_threshold": "server", "wait_time": "device"}.get(policy, "unified")


def ledger_from_settings(s: DiscoSettings, policy: DispatchPolicy) -> RedisLedger | None:
    """With `DISCO_STATE_URL`, the fleet ledger, attached to the policy's budget controller (a
    policy without a budget has nothing to share); else None, and nothing changes."""
    controller = getattr(policy, "controller", None)
    if s.state_url is None or not isinstance(controller, BudgetController):
        return None
    try:
        from langchain_disco.state.redis import RedisLedger

        ledger = RedisLedger(
            s.state_url.get_secret_value(),
            key=f"{s.state_namespace}:budget:{controller.budget.resource}",
        )
    except ImportError:
        raise ConfigError(
            "DISCO_STATE_URL needs the redis client: pip install 'langchain-disco[fleet]'"
        ) from None
    controller.ledger = ledger
    atexit.register(ledger.close)  # push the last settled spend when the worker exits
    return ledger


@dataclass(frozen=True)
class _Batch:
    """What one save pushes: outcomes, continuation verdicts and cache reports, and its id."""

    id: str
    outcomes: tuple[RequestOutcome, ...]
    verdicts: dict[str, dict[str, Any]]
    hits: tuple[tuple[float, float, float], ...]

    def replay(self, stored: Profiles) -> None:
        for outcome in self.outcomes:
            stored.observe(outcome)
        stored.continuation.update(self.verdicts)
        for age, predicted, reported in self.hits:
            stored.server_cache.observe(age, predicted, reported)


class LiveScheduler:
    """Policy + profiles for one model; thread-safe (sync calls run on a background loop)."""

    def __init__(self, settings: DiscoSettings, policy: DispatchPolicy) -> None:
        self.policy = policy
        self.ledger = ledger_from_settings(settings, policy)
        """The fleet's budget ledger (`DISCO_STATE_URL`), or None: the budget is this process's."""
        self.cost_model = cost_model_from(settings)

        def priors() -> Profiles:
            return Profiles.prior(settings.device_profile, settings.server_profile)

        self._priors = priors
        self._file = ProfileStore(settings.profile_path, fallback=priors)
        self._persist = settings.persist_profiles
        self._profiles: Profiles | None = None
        self._lock = threading.Lock()
        self._save_lock = threading.Lock()  # one save at a time: the sharing thread's, or ours
        self._seen = 0
        # What was learned since the last save, replayed onto the file's current content when
        # saving (`ProfileStore.merge`), so processes sharing the file never drop each other's
        # observations.
        self._unsaved: deque[RequestOutcome] = deque(maxlen=MAX_UNSAVED)
        self._unsaved_verdicts: dict[str, dict[str, Any]] = {}
        self._unsaved_hits: deque[tuple[float, float, float]] = deque(maxlen=MAX_UNSAVED)
        """(age, predicted, reported tokens) of the provider's cache reports since the save."""
        self._unacked: _Batch | None = None
        """What a save took and no save has yet confirmed (sent again, under its id)."""
        self.server_cache = ServerPrefixCache()
        """The prompts recently sent to the server (in memory: a provider keeps a prefix for
        minutes, not across restarts) and its learned prompt-cache hit rates (the profiles'
        `server_cache`, saved with them)."""
        self.shared: RedisProfileStore | None = None
        """With `DISCO_STATE_URL`, the fleet's profiles (else None: the profile file)."""
        self._sharing: Periodic | None = None
        if settings.state_url is not None and self._persist:
            self._share_through(settings)

    def _share_through(self, s: DiscoSettings) -> None:
        """Load the fleet's profiles now (at construction, not on a request: a new worker
        decides from what the fleet learned from its first request) and sync them from a
        thread of their own every `SHARE_EVERY_S`."""
        from langchain_disco.state._periodic import Periodic
        from langchain_disco.state.redis_profiles import RedisProfileStore

        assert s.state_url is not None
        self.shared = RedisProfileStore(
            s.state_url.get_secret_value(),
            namespace=s.state_namespace,
            device_id=s.device_id or socket.gethostname(),
            prior=self._priors,
            fallback=self._file.load,
        )
        with self._lock:
            self._profiles = self.shared.load()
            self.server_cache.rates = self._profiles.server_cache
        self._sharing = Periodic(self.save, SHARE_EVERY_S, name="disco-profiles")
        atexit.register(self.close)

    def close(self) -> None:
        """Stop sharing, after one last push of what this worker learned (bounded)."""
        if self._sharing is not None:
            self._sharing.close()
        if self.shared is not None:
            self.shared.close()
        if self.ledger is not None:
            self.ledger.close()

    @property
    def state(self) -> dict[str, str]:
        """Which state each shared part used now: ``{"budget": "fleet" | "local", "profiles":
        ...}`` with `DISCO_STATE_URL` ("local": the store is unreachable, this worker's own),
        empty without it."""
        out: dict[str, str] = {}
        if self.ledger is not None:
            out["budget"] = self.ledger.state
        if self.shared is not None:
            out["profiles"] = self.shared.state
        return out

    @property
    def profiles(self) -> Profiles:
        """The learned profiles, loaded from the cache (or the priors) on first use."""
        with self._lock:
            return self._loaded()

    def context(self) -> DispatchContext:
        return DispatchContext(profiles=self.profiles, cost_model=self.cost_model)

    def features(
        self,
        prompt_tokens: int,
        max_tokens: int | None,
        local: Endpoint | None,
        local_cache: PromptCacheView | None = None,
        server_prefix: ServerPrefixQuery | None = None,
    ) -> RequestFeatures:
        """What the policy sees: prompt size, the wait behind the device's queue, the share
        of the prompt the device has cached (`local_cache`, in the device's own tokens, applied
        to `prompt_tokens` so both stay on one scale), and what the provider is expected to
        read from its prompt cache (`server_prefix`, from `server_prefix_query`)."""
        pending = local.pending if local is not None else 0
        busy = local.busy if local is not None else False
        wait = 0.0
        if pending:
            # The queued jobs' sizes are unknown here; each is taken to be like this one.
            jobs = [
                DeviceJob(prompt_tokens=prompt_tokens, prefill_started=busy and i == 0)
                for i in range(pending)
            ]
            profiles = self.profiles
            wait = predict_queue_wait_s(jobs, profiles.device, profiles.output_lengths)
        cached = 0
        if local_cache is not None and local_cache.cached_tokens > 0:
            cached = min(round(prompt_tokens * local_cache.cached_share()), prompt_tokens - 1)
        remote_cached = 0
        if server_prefix is not None:
            remote_cached = min(server_prefix.match.expected_cached_tokens, prompt_tokens - 1)
        return RequestFeatures(
            prompt_tokens=prompt_tokens,
            max_tokens=max_tokens,
            local_queue=pending,
            local_queue_wait_s=wait,
            local_cached_tokens=max(cached, 0),
            remote_cached_tokens=max(remote_cached, 0),
        )

    def server_prefix_query(self, prefixes: PromptPrefixes) -> ServerPrefixQuery:
        """What the server is expected to hold of a prompt with these prefixes, now."""
        now = time.monotonic()
        with self._lock:
            self._loaded()  # the hit rates are the profiles'
            match = self.server_cache.match(prefixes, now)
        return ServerPrefixQuery(prefixes, now, match)

    @property
    def weighs_requests(self) -> bool:
        """Whether the policy looks at a request before planning it (the fixed modes do not,
        so nothing need be measured for them)."""
        return not isinstance(self.policy, (LocalOnly, RemoteOnly, Race))

    def plan(self, features: RequestFeatures) -> Plan:
        with self._lock:
            ctx = DispatchContext(profiles=self._loaded(), cost_model=self.cost_model)
            return self.policy.plan(features, ctx)

    def learn(
        self,
        features: RequestFeatures,
        plan: Plan,
        report: RequestReport,
        executed: Plan | None = None,
        server_prefix: ServerPrefixQuery | None = None,
    ) -> None:
        """Feed one finished (or abandoned) request to the profiles and the policy.

        `plan` is the policy's own plan object; `executed` the one the engine ran, when it
        differs (an endpoint that could not serve the request was dropped): the profiles learn
        what was executed, the policy's spend accounting finds its own plan. With
        `server_prefix`, a prompt the server was sent is remembered, and the cached tokens it
        reported teach the hit rate.
        """
        if executed is None or executed is plan:
            outcome = report.outcome(features, plan)
        else:
            outcome = replace(report.outcome(features, executed), chosen=plan)
        with self._lock:
            self._loaded().observe(outcome)
            self.policy.observe(outcome)
            if server_prefix is not None:
                self._learn_server_prefix(outcome, server_prefix)
            self._seen += 1
            if self._persist:
                self._unsaved.append(outcome)
            due = self._persist and self.shared is None and self._seen % SAVE_EVERY == 0
        if due:  # the file, every SAVE_EVERY requests; the fleet's store syncs on its thread
            self.save()

    def _learn_server_prefix(self, outcome: RequestOutcome, query: ServerPrefixQuery) -> None:
        # The dispatch's server run (a continuation after it resends the prompt too, so the
        # prompt counts as sent either way); a request the server never saw teaches nothing.
        run = next((r for r in outcome.endpoints if r.endpoint == "remote"), None)
        if run is None:
            return
        if run.first_token_s is not None and run.input_tokens > 0 and not run.failed:
            # The provider's count, on the request's scale (its tokenizer is not ours).
            share = min(max(run.cached_input_tokens, 0), run.input_tokens) / run.input_tokens
            reported = round(outcome.request.prompt_tokens * share)
            self.server_cache.observe(query.match, reported)
            if self._persist and query.match.shared_tokens > 0:
                self._unsaved_hits.append((query.match.age_s, query.match.shared_tokens, reported))
        self.server_cache.sent(query.prefixes, query.at_s)

    def get_verdict(self, key: str) -> object:
        """A remembered continuation verdict (`endpoints/_probe.py`), or None."""
        with self._lock:
            return self._loaded().continuation.get(key)

    def put_verdict(self, key: str, verdict: dict[str, Any]) -> None:
        """Remember a probed continuation verdict with the profiles, and save them now."""
        with self._lock:
            self._loaded().continuation[key] = dict(verdict)
            if self._persist:
                self._unsaved_verdicts[key] = dict(verdict)
        if self._sharing is not None:
            self._sharing.wake()  # Redis is not waited on here
        else:
            self.save()

    def save(self) -> None:
        """Persist the learned profiles now (a failure is logged, never raised).

        What this process learned since its last save is replayed onto the store's current
        content (the file under its lock, or the fleet's profiles in Redis), and the merged
        profiles replace the ones in memory: other processes sharing the store keep their
        observations, and this one learns theirs. Requests go on meanwhile: what they teach
        during the merge is replayed onto the merged profiles. A batch whose save failed is
        sent again, alone and under the same id, until one succeeds: Redis may have applied a
        save whose reply timed out, and the id makes it count once. With nothing new to save,
        the fleet's profiles are only read.
        """
        if not self._persist:
            return
        with self._save_lock:
            with self._lock:
                if self._profiles is None:
                    return
                if self._unacked is None and (
                    self._unsaved or self._unsaved_verdicts or self._unsaved_hits
                ):
                    self._unacked = _Batch(
                        uuid.uuid4().hex,
                        tuple(self._unsaved),
                        dict(self._unsaved_verdicts),
                        tuple(self._unsaved_hits),
                    )
                    self._unsaved.clear()
                    self._unsaved_verdicts.clear()
                    self._unsaved_hits.clear()
                batch = self._unacked
                if batch is None and self.shared is None:
                    return
            included: list[tuple[int, int]] = []

            def everything_known() -> Profiles:
                """For a store with nothing usable: all this process knows, which includes
                what is still unsaved (counted now, so it is not pushed again)."""
                with self._lock:
                    assert self._profiles is not None
                    included.append((len(self._unsaved), len(self._unsaved_hits)))
                    return Profiles.from_dict(self._profiles.to_dict())

            merged: Profiles | None
            if batch is None:  # the fleet's store, nothing to push: read what the others learned
                assert self.shared is not None
                merged = self.shared.pull()
            elif self.shared is not None:
                merged = self.shared.merge(batch.replay, everything_known, batch_id=batch.id)
            else:
                try:
                    merged = self._file.merge(batch.replay, everything_known)
                except OSError as exc:
                    logger.warning("cannot save latency profiles to %s: %s", self._file.path, exc)
                    merged = None
            with self._lock:
                if merged is None:  # the batch stays unacknowledged, for the next save
                    return
                self._unacked = None
                outcomes, hits = included[-1] if included else (0, 0)
                for _ in range(min(outcomes, len(self._unsaved))):
                    self._unsaved.popleft()  # in the store already: part of everything known
                for _ in range(min(hits, len(self._unsaved_hits))):
                    self._unsaved_hits.popleft()
                # In place: the engine's migration predictor holds this very object.
                for f in fields(Profiles):
                    setattr(self._profiles, f.name, getattr(merged, f.name))
                for outcome in self._unsaved:  # learned meanwhile, not in the store yet
                    self._profiles.observe(outcome)
                self._profiles.continuation.update(self._unsaved_verdicts)
                for age, predicted, reported in self._unsaved_hits:
                    self._profiles.server_cache.observe(age, predicted, reported)
                self.server_cache.rates = self._profiles.server_cache

    def _loaded(self) -> Profiles:
        if self._profiles is None:
            self._profiles = self._file.load() if self._persist else self._priors()
            self.server_cache.rates = self._profiles.server_cache
        return self._profiles
