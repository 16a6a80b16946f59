"""Versioned JSON persistence of `Profiles` in the user's cache directory.

The only module of `scheduling/` that touches the file system, and only when asked. A missing
file yields the fallback priors; a corrupt, unreadable or other-version file logs a warning and
yields them too: a profile cache must never stop a chat model from starting.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from langchain_disco.scheduling.profiles import Profiles

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
"""Bumped whenever the JSON layout changes; files of another version are ignored."""


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
        try:
            text = self.path.read_text("utf-8")
        except FileNotFoundError:
            return self._fallback()
        except OSError as exc:
            logger.warning("cannot read profile cache %s (%s); using priors", self.path, exc)
            return self._fallback()
        try:
            data = json.loads(text)
            version = data.get("version") if isinstance(data, dict) else None
            if version != FORMAT_VERSION:
                logger.warning(
                    "profile cache %s has format version %r, expected %d; using priors",
                    self.path,
                    version,
                    FORMAT_VERSION,
                )
                return self._fallback()
            return Profiles.from_dict(data["profiles"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            logger.warning("profile cache %s is corrupt (%s); using priors", self.path, exc)
            return self._fallback()

    def save(self, profiles: Profiles) -> None:
        """Write atomically (temporary file + rename), creating the directory if needed."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = json.dumps({"version": FORMAT_VERSION, "profiles": profiles.to_dict()})
        fd, tmp = tempfile.mkstemp(prefix=".profiles-", suffix=".json", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(payload)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
