"""Typed, range-checked reads of a saved profile: the guard between a file and the math.

A profile cache is outside input (a crash mid-write, a disk fault, a hand edit, a bug of another
version). Every value is checked for its type and a physically sane range as it is decoded, so
nothing non-finite, negative or absurd reaches a policy or a learner; a failure names the field.
"""

from __future__ import annotations

import math

MAX_SECONDS = 86_400.0
"""The longest plausible TTFT, overhead or time per token: a day."""
MIN_S_PER_TOKEN = 1e-9
"""The fastest plausible decode or prefill: a billion tokens per second."""
MAX_TOKENS = 1e9
"""The longest plausible prompt or answer, in tokens."""
MAX_COUNT = 2**53
"""Observation counts beyond what a float holds exactly are corrupt, not learned."""
MAX_ITEMS = 1_000_000
"""The most samples a reservoir, or items a list, may hold."""
MAX_TEXT = 1_000
"""The longest plausible profile name."""
MAX_SEED = 2**63
"""Seeds are whole numbers in [-MAX_SEED, MAX_SEED]."""
MAX_SAMPLE = 1e12
"""No quantity a reservoir keeps (seconds, tokens, ratios) comes near this; sums of a full
reservoir of them stay far from overflow."""


class ProfileFormatError(ValueError):
    """A saved profile is unreadable or implausible; the message names the field and why."""


def _show(value: object) -> str:
    try:
        text = repr(value)
    except ValueError:  # an int of more digits than Python will print
        return type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def number(value: object, where: str, *, lo: float, hi: float) -> float:
    """A finite float in [lo, hi] (an int is accepted, a bool is not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProfileFormatError(f"{where} is {_show(value)}, expected a number")
    try:
        x = float(value)
    except OverflowError:
        x = math.inf
    if not lo <= x <= hi:  # also false for NaN
        raise ProfileFormatError(f"{where} is {_show(value)}, expected a number in [{lo}, {hi}]")
    return x


def integer(value: object, where: str, *, lo: int = 0, hi: int = MAX_COUNT) -> int:
    """A whole number in [lo, hi], written as one (not a bool, not 5.0, not 1e308)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProfileFormatError(f"{where} is {_show(value)}, expected a whole number")
    if not lo <= value <= hi:
        raise ProfileFormatError(
            f"{where} is {_show(value)}, expected a whole number in [{lo}, {hi}]"
        )
    return value


def items(
    value: object, where: str, *, length: int | None = None, max_length: int = MAX_ITEMS
) -> list[object]:
    """A JSON list, of exactly `length` items or at most `max_length`."""
    if not isinstance(value, list):
        raise ProfileFormatError(f"{where} is {_show(value)}, expected a list")
    if length is not None and len(value) != length:
        raise ProfileFormatError(f"{where} has {len(value)} items, expected {length}")
    if len(value) > max_length:
        raise ProfileFormatError(f"{where} has {len(value)} items, at most {max_length} allowed")
    return value


def numbers(
    value: object,
    where: str,
    *,
    lo: float,
    hi: float,
    length: int | None = None,
    max_length: int = MAX_ITEMS,
) -> list[float]:
    """A list of finite floats in [lo, hi]."""
    seq = items(value, where, length=length, max_length=max_length)
    return [number(v, f"{where}[{i}]", lo=lo, hi=hi) for i, v in enumerate(seq)]


class Fields:
    """One JSON object of a saved profile; each read checks one field and names `path.key`."""

    def __init__(self, data: object, path: str) -> None:
        if not isinstance(data, dict):
            raise ProfileFormatError(f"{path} is {_show(data)}, expected an object")
        self._data: dict[object, object] = data
        self.path = path

    def where(self, key: str) -> str:
        return f"{self.path}.{key}"

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def get(self, key: str) -> object:
        if key not in self._data:
            raise ProfileFormatError(f"{self.where(key)} is missing")
        return self._data[key]

    def optional(self, key: str) -> object:
        """The raw value at `key`, None when absent (for fields older files lack)."""
        return self._data.get(key)

    def number(self, key: str, *, lo: float, hi: float) -> float:
        return number(self.get(key), self.where(key), lo=lo, hi=hi)

    def integer(self, key: str, *, lo: int = 0, hi: int = MAX_COUNT) -> int:
        return integer(self.get(key), self.where(key), lo=lo, hi=hi)

    def numbers(
        self,
        key: str,
        *,
        lo: float,
        hi: float,
        length: int | None = None,
        max_length: int = MAX_ITEMS,
    ) -> list[float]:
        return numbers(
            self.get(key), self.where(key), lo=lo, hi=hi, length=length, max_length=max_length
        )

    def items(
        self, key: str, *, length: int | None = None, max_length: int = MAX_ITEMS
    ) -> list[object]:
        return items(self.get(key), self.where(key), length=length, max_length=max_length)

    def text(self, key: str) -> str:
        value = self.get(key)
        if not isinstance(value, str):
            raise ProfileFormatError(f"{self.where(key)} is {_show(value)}, expected a string")
        if not 0 < len(value) <= MAX_TEXT:
            raise ProfileFormatError(f"{self.where(key)} is empty or longer than {MAX_TEXT}")
        try:
            value.encode("utf-8")  # a lone surrogate (`"\ud800"`) would fail every print
        except UnicodeEncodeError:
            raise ProfileFormatError(f"{self.where(key)} is not valid text") from None
        return value
