"""Versioned JSON persistence of `Profiles` in the user's cache directory.

The only module of `scheduling/` that touches the file system, and only when asked. A missing
file yields the fallback priors; a corrupt, unreadable, implausible or other-version file logs
one warning and yields them too: a profile cache must never stop a chat model from starting,
and nothing it holds reaches the math unchecked (`_validate.py`).

Several processes may share one file (app workers on one machine). `merge` therefore never
writes what one process holds over what the others learned: under a file lock (`filelock`) it
reads the file as it is now, lets the caller apply what it learned since its last save, and
writes the result, so every observation lands exactly once.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock, Timeout

from langchain_disco.scheduling._validate import ProfileFormatError
from langchain_disco.scheduling.profiles import DeviceProfile, Profiles

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
"""Bumped whenever the JSON layout changes; files of another version are ignored."""
MAX_FILE_BYTES = 64 * 1024 * 1024
"""A profile cache is tens of kilobytes; one this large is not ours, and is not read whole."""
LOCK_TIMEOUT_S = 10.0
"""How long `merge` waits for another process's save (milliseconds, normally) before it gives
up this time and keeps what it learned for the next save."""


class ProfileLockTimeout(OSError):
    """Another process held the profile cache's lock for longer than `LOCK_TIMEOUT_S`."""


_CORRUPT = (
    # What decoding the parsed file can raise: an implausible value (`ProfileFormatError`, a
    # `ValueError`) and, should a check in `from_dict` miss a case, the errors of using a
    # value of the wrong shape.
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    ArithmeticError,
)


class _NonFinite(Exception):
    """`NaN`, `Infinity` or a literal too large for a float, met while parsing."""


def _reject_constant(text: str) -> float:
    raise _NonFinite(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # `1e400` parses as infinity
        raise _NonFinite(text)
    return value


def _parse(raw: bytes) -> object:
    """JSON of UTF-8 `raw`, refusing `NaN` and infinities anywhere (Python's `json` accepts
    them; keeping one, even in a continuation verdict, would make the next save unreadable)."""
    text = raw.decode("utf-8")
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except _NonFinite as exc:
        raise ProfileFormatError(
            f"{_where_non_finite(text)} is {exc}, not a finite number"
        ) from None


def _where_non_finite(text: str) -> str:
    """The path of the first non-finite number of a document (which parsed once already)."""
    mark = object()
    doc = json.loads(
        text,
        parse_constant=lambda _: mark,
        parse_float=lambda f: 0.0 if math.isfinite(float(f)) else mark,
    )
    pending: list[tuple[str, object]] = [("", doc)]
    while pending:  # depth first, in document order, without recursion
        path, node = pending.pop()
        if node is mark:
            return path.removeprefix(".") or "the document"
        if isinstance(node, dict):
            pending.extend((f"{path}.{k}", v) for k, v in reversed(node.items()))
        elif isinstance(node, list):
            pending.extend((f"{path}[{i}]", v) for i, v in reversed(list(enumerate(node))))
    return "a value"


def encode_profiles(profiles: Profiles) -> str:
    """The versioned JSON payload, `{"version": 1, "profiles": {...}}` (file and shared store)."""
    return json.dumps({"version": FORMAT_VERSION, "profiles": profiles.to_dict()})


def decode_json(raw: bytes) -> object:
    """JSON of UTF-8 `raw`, non-finite numbers refused; `ValueError` ("is corrupt (...)")."""
    try:
        return _parse(raw)
    except RecursionError:
        raise ValueError("is corrupt (nested too deeply)") from None
    except ValueError as exc:
        raise ValueError(f"is corrupt ({exc})") from None


def decode_device(raw: bytes) -> DeviceProfile:
    """A device line saved as `DeviceProfile.to_dict()` JSON (the shared store keeps one per
    device); `ValueError` ("is corrupt (...)") naming the first bad field otherwise."""
    data = decode_json(raw)
    try:
        return DeviceProfile.from_dict(data, path="device")
    except _CORRUPT as exc:
        raise ValueError(f"is corrupt ({exc})") from None


def decode_profiles(raw: bytes) -> Profiles:
    """Profiles from a payload `encode_profiles` wrote; `ValueError` whose text completes
    "profile cache <where> ..." ("is corrupt (...)", "has format version ...") otherwise."""
    data = decode_json(raw)
    version = data.get("version") if isinstance(data, dict) else None
    if not isinstance(data, dict) or type(version) is not int or version != FORMAT_VERSION:
        raise ValueError(f"has format version {version!r}, expected {FORMAT_VERSION}")
    try:
        return Profiles.from_dict(data.get("profiles"), path="profiles")
    except _CORRUPT as exc:
        raise ValueError(f"is corrupt ({exc})") from None


def default_cache_dir() -> Path:
    """The per-user cache directory for langchain-disco (XDG, macOS and Windows conventions)."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
        return base / "langchain-disco" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "langchain-disco"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "langchain-disco"


def default_profiles_path() -> Path:
    return default_cache_dir() / "profiles.json"


class ProfileStore:
    """Loads and saves `Profiles` as `{"version": 1, "profiles": {...}}` at `path`."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        fallback: Callable[[], Profiles] = Profiles.prior,
    ) -> None:
        self.path = Path(path) if path is not None else default_profiles_path()
        self._fallback = fallback

    def load(self) -> Profiles:
        """The saved profiles, or the fallback priors when there is no usable file."""
        saved = self._read()
        return saved if saved is not None else self._fallback()

    def _read(self) -> Profiles | None:
        """The saved profiles, or None (after the one warning) when there is no usable file."""
        try:
            with self.path.open("rb") as handle:
                raw = handle.read(MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            return self._unusable(f"cannot read profile cache {self.path} ({exc})")
        if len(raw) > MAX_FILE_BYTES:
            return self._unusable(
                f"profile cache {self.path} is larger than {MAX_FILE_BYTES} bytes"
            )
        try:
            return decode_profiles(raw)
        except ValueError as exc:
            return self._unusable(f"profile cache {self.path} {exc}")

    def _unusable(self, reason: str) -> Profiles | None:
        """The one warning an unusable file gets (`disco profile show` quotes its reason), and
        what `_read` returns for it: nothing."""
        logger.warning("%s; using priors", reason)
        return None

    @property
    def lock_path(self) -> Path:
        """The lock file beside the cache (`profiles.json.lock`); it is left in place."""
        return self.path.with_name(self.path.name + ".lock")

    def merge(
        self, apply: Callable[[Profiles], None], unusable: Callable[[], Profiles]
    ) -> Profiles:
        """Under the file lock: load the file as it is now, `apply` what this process learned
        since its last save, write the result, and return it. With no usable file (none yet,
        or a corrupt one) `unusable()`, everything this process knows, is written instead.

        Raises `ProfileLockTimeout` (an `OSError`) when the lock is not free within
        `LOCK_TIMEOUT_S`, and `OSError` when the file cannot be written.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with FileLock(self.lock_path, timeout=LOCK_TIMEOUT_S):
                merged = self._read()
                if merged is None:
                    merged = unusable()
                else:
                    apply(merged)
                self.save(merged)
        except Timeout:
            raise ProfileLockTimeout(
                f"the lock {self.lock_path} was held for more than {LOCK_TIMEOUT_S:g} s"
            ) from None
        return merged

    def save(self, profiles: Profiles) -> None:
        """Write atomically (temporary file + rename), creating the directory if needed.

        Overwrites whatever the file holds: a process sharing the file with others saves
        through `merge`.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = encode_profiles(profiles)
        fd, tmp = tempfile.mkstemp(prefix=".profiles-", suffix=".json", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(payload)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
