"""`disco profile show`: what a profile cache holds, as a summary and rich tables.

Unlike `ProfileStore.load`, which falls back to the priors so that a chat model always starts,
showing a profile must say when the file is missing or unusable, and why.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

from rich.table import Table

from langchain_disco.errors import ConfigError
from langchain_disco.scheduling import LengthProfile, Profiles, ProfileStore, ServerProfile, _data
from langchain_disco.scheduling.empirical import Reservoir

_QUANTILES = (("p10", 0.1), ("p50", 0.5), ("p90", 0.9), ("p99", 0.99))


class _Unusable(Exception):
    pass


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def load_profiles(path: Path, option: str = "--path") -> Profiles:
    """The profiles saved at `path`; a `ConfigError` saying why when there are none to use."""
    where = "--path or DISCO_PROFILE_PATH" if option == "--path" else option
    if not path.exists():
        raise ConfigError(
            f"no profile cache at {path}: nothing learned yet. DiscoChatModel writes it after "
            "its requests when DISCO_PERSIST_PROFILES is true (the default); give another "
            f"file with {where}"
        )
    if not path.is_file():
        raise ConfigError(f"{option} {path} is not a file: give the profile cache file")

    def unusable() -> Profiles:
        raise _Unusable

    logger = logging.getLogger("langchain_disco.scheduling.store")
    capture = _Capture()
    logger.addHandler(capture)
    try:
        return ProfileStore(path, fallback=unusable).load()
    except _Unusable:
        reason = capture.messages[-1].removesuffix("; using priors") if capture.messages else ""
        raise ConfigError(
            f"cannot show the profiles: {reason or f'{path} is unusable'}; "
            f"`disco profile reset --path {path}` deletes it"
        ) from None
    finally:
        logger.removeHandler(capture)


def _distribution(reservoir: Reservoir, prior_n: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {name: reservoir.quantile(q) for name, q in _QUANTILES}
    out["mean"] = reservoir.mean()
    out["samples_held"] = len(reservoir)
    out["seen"] = reservoir.n_seen
    # Observations on top of the prior, when the prior's size is known.
    out["observed"] = None if prior_n is None else max(reservoir.n_seen - prior_n, 0)
    return out


def _server_prior_n(server: ServerProfile) -> int | None:
    measured = _data.server_samples()
    if server.name == "all":
        n = sum(len(v) for v in measured.values())
    elif server.name in measured:
        n = len(measured[server.name])
    else:
        return None
    return min(n, server.ttft.capacity)


def _length_prior_n(lengths: LengthProfile) -> int:
    return min(len(_data.azure_conv_lengths()[0]), lengths.tokens.capacity)


def profile_summary(profiles: Profiles) -> dict[str, Any]:
    """Device line and decode rate, server TTFT quantiles and decode rate, length statistics,
    and how many observations each rests on."""
    device, server = profiles.device, profiles.server
    return {
        "device": {
            "name": device.name,
            "overhead_s": device.overhead_s,
            "prefill_tok_s": device.prefill_tok_s,
            "decode_tok_s": device.decode_tok_s,
            "ttft_observations": device.n_ttft,
            "decode_observations": device.n_decode,
        },
        "server": {
            "name": server.name,
            "ttft_s": _distribution(server.ttft, _server_prior_n(server)),
            "decode_tok_s": server.decode_tok_s,
            "decode_observations": server.n_decode,
            "prompt_buckets": list(server.bucket_edges),
        },
        "output_tokens": _distribution(
            profiles.output_lengths.tokens, _length_prior_n(profiles.output_lengths)
        ),
        "prompt_tokens": _distribution(
            profiles.prompt_lengths.tokens, _length_prior_n(profiles.prompt_lengths)
        ),
        "continuation": _verdicts(profiles),
        "server_prompt_cache": [
            {"age_below_s": edge if edge < math.inf else None, "hit_rate": rate, "reports": reports}
            for edge, rate, reports in profiles.server_cache.buckets()
        ],
    }


def _verdicts(profiles: Profiles) -> dict[str, dict[str, Any]]:
    """Each probed server's continuation verdict, as `DISCO_REMOTE_CONTINUATION` values."""
    from langchain_disco.endpoints._probe import ContinuationVerdict

    shown: dict[str, dict[str, Any]] = {}
    for key, raw in sorted(profiles.continuation.items()):
        verdict = ContinuationVerdict.from_dict(raw)
        if verdict is None:
            continue
        base_url, _, model = key.rpartition("|")
        shown[key] = {
            "base_url": base_url,
            "model": model,
            "mode": verdict.mode,
            "echo": verdict.echo,
            "probed_at": verdict.probed_at,
            "verdict": verdict.describe(),
        }
    return shown


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def profile_tables(summary: dict[str, Any]) -> list[Table]:
    """Three tables: the device, the server's TTFT, and prompt and answer lengths."""
    d = summary["device"]
    device = Table(title="device (local): TTFT = overhead + prompt tokens / prefill rate")
    for column in ("prior", "overhead s", "prefill tok/s", "decode tok/s", "TTFTs", "decodes"):
        device.add_column(column, justify="left" if column == "prior" else "right")
    device.add_row(
        d["name"],
        f"{d['overhead_s']:.3f}",
        f"{d['prefill_tok_s']:,.1f}",
        f"{d['decode_tok_s']:,.1f}",
        _count(d["ttft_observations"]),
        _count(d["decode_observations"]),
    )
    s = summary["server"]
    t = s["ttft_s"]
    server = Table(title="server (remote): TTFT distribution in s")
    columns = ("prior", "p10", "p50", "p90", "p99", "mean", "decode tok/s", "TTFTs", "decodes")
    for column in columns:
        server.add_column(column, justify="left" if column == "prior" else "right")
    server.add_row(
        s["name"],
        *(f"{t[k]:.3f}" for k in ("p10", "p50", "p90", "p99", "mean")),
        f"{s['decode_tok_s']:,.1f}",
        _count(t["observed"]),
        _count(s["decode_observations"]),
    )
    lengths = Table(title="lengths in tokens")
    for column in ("", "p10", "p50", "p90", "p99", "mean", "observed"):
        lengths.add_column(column, justify="left" if not column else "right")
    for label, key in (("prompt", "prompt_tokens"), ("answer", "output_tokens")):
        x = summary[key]
        lengths.add_row(
            label,
            *(f"{x[k]:,.0f}" for k in ("p10", "p50", "p90", "p99", "mean")),
            _count(x["observed"]),
        )
    server.caption = "TTFTs, decodes: observations learned on top of the bundled prior"
    tables = [device, server, lengths]
    hits = summary.get("server_prompt_cache") or []
    if any(b["reports"] > 0 for b in hits):
        cache = Table(title="server prompt cache: share of a shared prefix read cached")
        for column in ("prefix last sent", "hit rate", "reports"):
            cache.add_column(column, justify="left" if column == "prefix last sent" else "right")
        for b in hits:
            edge = b["age_below_s"]
            age = "older" if edge is None else f"< {edge / 60:g} min ago"
            cache.add_row(age, f"{b['hit_rate']:.2f}", f"{b['reports']:.1f}")
        tables.append(cache)
    if summary.get("continuation"):
        probed = Table(title="remote continuation (probed: DISCO_REMOTE_CONTINUATION=auto)")
        for column in ("base URL", "model", "mode", "echo", "probed at (UTC)"):
            probed.add_column(column)
        for v in summary["continuation"].values():
            when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(v["probed_at"]))
            echo = {True: "yes (stripped)", False: "no", None: "?"}[v["echo"]]
            probed.add_row(v["base_url"], v["model"], v["mode"], echo, when)
        tables.append(probed)
    return tables
