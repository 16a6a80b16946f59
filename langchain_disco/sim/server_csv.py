"""Your own server measurements for the simulator: a CSV of measured TTFTs (and decode gaps).

`disco bench sim --server my.csv` replays the server from these rows instead of a bundled
provider; `--server-prior my.csv` starts the policies' server profile from them. Two forms are
read:

- the llmperf columns the bundled data uses (`ttft_s`, `inter_token_latency_s`; other columns
  such as `provider`, `model`, `input_tokens` are ignored), so an llmperf run's CSV works as is;
- a minimal `ttft_s[,gap_s]`: one measured request per row, its time to first token and the mean
  gap between its later tokens, in seconds.

Without a gap column every request decodes at the median inter-token gap of the bundled
measurements (all providers pooled), and the run says so. A bad file fails before anything runs,
naming the file, the row and the column.
"""

from __future__ import annotations

import csv
import functools
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from langchain_disco.errors import ConfigError
from langchain_disco.scheduling import _data

GAP_COLUMNS = ("inter_token_latency_s", "gap_s")
"""Accepted names of the decode-gap column, in order of preference."""


@dataclass(frozen=True)
class ServerMeasurements:
    """The rows of one file: what the simulator draws its server from."""

    name: str
    """The file's stem: how results are labelled."""
    samples: tuple[_data.ServerSample, ...]
    gap_from_file: bool
    """False: the file had no gap column, every sample has the bundled median gap."""

    @property
    def pool(self) -> tuple[tuple[float, float], ...]:
        """(TTFT s, gap s) pairs, as `SimConfig.server_pool` takes them."""
        return tuple((s.ttft_s, s.inter_token_s) for s in self.samples)


def looks_like_file(value: str) -> bool:
    """A `--server` value names a file (not a bundled provider-size) when it ends in .csv or
    contains a path separator."""
    return value.lower().endswith(".csv") or "/" in value or "\\" in value


def bundled_median_gap_s() -> float:
    """The median inter-token gap of every bundled llmperf measurement."""
    gaps = [s.inter_token_s for rows in _data.server_samples().values() for s in rows]
    return statistics.median(g for g in gaps if g > 0)


def read_server_measurements(path: str | Path, *, option: str = "--server") -> ServerMeasurements:
    """Read and check a measurements CSV; `option` names the flag in error messages.

    Read once per process and file: a run asks for it at validation, per seed and for every
    label of its results."""
    return _read(str(path), option)


@functools.lru_cache(maxsize=16)
def _read(path: str, option: str) -> ServerMeasurements:
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{option} {str(path)!r}: no such file; give a CSV of measured TTFTs")
    with file.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in reader.fieldnames or ()]
        if "ttft_s" not in columns:
            raise ConfigError(
                f"{option} {str(path)!r}: no ttft_s column (found: {', '.join(columns) or 'none'});"
                " give llmperf's columns (ttft_s, inter_token_latency_s) or ttft_s[,gap_s]"
            )
        gap_column = next((c for c in GAP_COLUMNS if c in columns), None)
        default_gap = None if gap_column is not None else bundled_median_gap_s()
        samples = []
        for line, row in enumerate(reader, start=2):
            row = {k.strip(): v for k, v in row.items() if k is not None}
            ttft = _number(row.get("ttft_s"), file, line, "ttft_s", option, allow_zero=True)
            gap = (
                default_gap
                if gap_column is None
                else _number(row.get(gap_column), file, line, gap_column, option)
            )
            assert gap is not None
            samples.append(_data.ServerSample(ttft, gap))
    if not samples:
        raise ConfigError(f"{option} {str(path)!r}: the file has a header but no rows")
    return ServerMeasurements(file.stem, tuple(samples), gap_from_file=gap_column is not None)


def _number(
    text: str | None, file: Path, line: int, column: str, option: str, *, allow_zero: bool = False
) -> float:
    try:
        value = float(text) if text is not None and text.strip() else math.nan
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(
            f"{option} {str(file)!r}, row {line}: {column} = {text!r} is not a number {bound} "
            "(seconds); fix or remove the row"
        )
    return value
