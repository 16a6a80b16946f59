"""The fleet's learned profiles in Redis: what one worker learns, every worker knows.

Layout, under the namespace `ns` (`DISCO_STATE_NAMESPACE`):

- `{ns}:profiles` holds what the fleet shares: the versioned JSON payload of the file store
  (`scheduling.store.encode_profiles`), of which the server's TTFT samples and decode rate, the
  answer and prompt lengths, the continuation-probe verdicts and the provider's prompt-cache
  hit rates are read. Its `device` part is whichever worker wrote last, and is never read.
- `{ns}:profiles:device:{device_id}` holds one device's line (`DeviceProfile.to_dict()` JSON):
  a device is a machine and its model (`DISCO_DEVICE_ID`, default the host name), so workers
  on one host share it and a worker on another host learns its own from its own prior.

`merge` has the contract of `ProfileStore.merge`: read the store as it is now, apply what this
worker learned since its last save, write the result, return it. It is optimistic (WATCH both
keys, then MULTI/EXEC); a concurrent writer makes EXEC fail and the merge is redone on what
that writer left, so every observation lands exactly once (tested with several processes).
Each save carries the id of its batch and leaves a marker (`{ns}:profiles:applied:{id}`, kept a
day) in the same transaction: a save whose reply timed out may still have been applied by a
slow Redis, and when the caller sends that batch again, the marker makes it count once.

Faults (Redis down, slow past `timeout_s`, a key that is not a payload we wrote): nothing is
raised. A store that cannot be reached makes `load` return the local fallback (the profile
file, or the priors) and `merge` return None, so the caller keeps what it learned for the next
save, with one warning per outage and one info line when the store is back. A key holding
garbage is treated as the file store treats a corrupt file: one warning, and the merge writes
everything this worker knows over it. The caller never waits on Redis on a request's path: the
live scheduler calls `merge` from its own thread (`_live_scheduler.py`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, Literal

from langchain_disco.scheduling.profiles import DeviceProfile, Profiles
from langchain_disco.scheduling.store import decode_device, decode_profiles, encode_profiles
from langchain_disco.state._urls import redact_url

logger = logging.getLogger(__name__)

TIMEOUT_S = 1.0
APPLIED_TTL_S = 24 * 3600
"""How long a save's id is remembered (a retry comes seconds later, or after an outage)."""
MAX_CONFLICTS = 8
"""Merges redone after a concurrent writer, before this save gives up (the next one retries)."""


class RedisProfileStore:
    """Shared `Profiles` in Redis, with a local store to fall back on.

    `load()` and `merge(apply, unusable=...)` as `ProfileStore`'s, except that `merge` returns
    None (and keeps nothing) when the store cannot be reached; `state` says what the last call
    used: `"fleet"` (Redis) or `"local"` (the fallback).
    """

    def __init__(
        self,
        url: str,
        *,
        namespace: str,
        device_id: str,
        prior: Callable[[], Profiles],
        fallback: Callable[[], Profiles],
        timeout_s: float = TIMEOUT_S,
    ) -> None:
        import redis  # the `fleet` extra; imported here so the default never needs it

        self._redis = redis
        self.shown_url = redact_url(url)
        self.shared_key = f"{namespace}:profiles"
        self.device_key = f"{namespace}:profiles:device:{device_id}"
        self._prior = prior
        """The priors: a device with no line in the store yet starts from its own."""
        self._fallback = fallback
        """What `load` returns without the store: the local profile file, or the priors."""
        self._client: Any = redis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry_on_timeout=False,
        )
        self.state: Literal["fleet", "local"] = "local"
        self._warned = False
        self.saves = 0
        self.pulls = 0
        """Reads of the fleet's profiles that reached Redis (one MGET each)."""
        self.conflicts = 0

    def __repr__(self) -> str:
        return f"RedisProfileStore({self.shown_url!r}, key={self.shared_key!r})"

    def close(self) -> None:
        self._client.close()

    def load(self) -> Profiles:
        """The fleet's profiles (with this device's line), or the fallback when there are none
        yet, or the store cannot be reached or holds garbage."""
        pulled = self.pull()
        return pulled if pulled is not None else self._fallback()

    def pull(self) -> Profiles | None:
        """The fleet's profiles (with this device's line); None when there are none yet, or
        the store cannot be reached or holds garbage."""
        try:
            shared, device = self._client.mget(self.shared_key, self.device_key)
        except self._redis.RedisError as exc:
            self._unreachable(exc)
            return None
        self._reached()
        self.pulls += 1
        return self._decode(shared, device)

    def merge(
        self,
        apply: Callable[[Profiles], None],
        unusable: Callable[[], Profiles],
        *,
        batch_id: str,
    ) -> Profiles | None:
        """Apply what this worker learned to the fleet's profiles and write them back; None
        when the store cannot be reached or stays contended (send it again, under the same
        `batch_id`: a save whose reply was lost may have been applied, and is not twice)."""
        marker = f"{self.shared_key}:applied:{batch_id}"
        try:
            for _ in range(MAX_CONFLICTS):
                with self._client.pipeline() as pipe:
                    try:
                        pipe.watch(self.shared_key, self.device_key, marker)
                        shared, device, applied = pipe.mget(
                            self.shared_key, self.device_key, marker
                        )
                        merged = self._decode(shared, device)
                        if applied is not None and merged is not None:
                            pipe.unwatch()
                            self._reached()
                            return merged  # this batch is in already
                        if merged is None:
                            merged = unusable()
                        else:
                            apply(merged)
                        pipe.multi()
                        pipe.set(self.shared_key, encode_profiles(merged))
                        pipe.set(self.device_key, _encode_device(merged.device))
                        pipe.set(marker, b"1", ex=APPLIED_TTL_S)
                        pipe.execute()
                    except self._redis.WatchError:  # another worker saved in between: redo
                        self.conflicts += 1
                        continue
                self._reached()
                self.saves += 1
                return merged
        except self._redis.RedisError as exc:
            self._unreachable(exc)
            return None
        self._reached()
        return None

    def _decode(self, shared: bytes | None, device: bytes | None) -> Profiles | None:
        """The fleet's profiles with this device's line (its prior's, before it has one); None
        when there are none yet or they are garbage (warned)."""
        if shared is None:
            return None
        try:
            profiles = decode_profiles(shared)
            profiles.device = decode_device(device) if device is not None else self._prior().device
        except ValueError as exc:
            logger.warning(
                "shared profiles at %s (%s) %s; writing this worker's over them",
                self.shown_url,
                self.shared_key,
                exc,
            )
            return None
        return profiles

    def _reached(self) -> None:
        if self.state != "fleet" and self._warned:
            logger.info("shared profiles at %s reachable again", self.shown_url)
        self.state = "fleet"
        self._warned = False

    def _unreachable(self, exc: BaseException) -> None:
        self.state = "local"
        if not self._warned:
            self._warned = True
            # redis-py's texts name host and port, never the password; the URL is redacted.
            logger.warning(
                "shared profiles at %s unavailable (%s): this worker learns alone until it "
                "returns, and then saves what it learned meanwhile",
                self.shown_url,
                type(exc).__name__,
            )


def _encode_device(device: DeviceProfile) -> str:
    return json.dumps(device.to_dict())
