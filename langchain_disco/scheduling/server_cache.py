"""What the provider is likely to hold in its prompt cache, learned from what it reported.

Hosted APIs cache prompt prefixes they were sent recently and bill the cached part at a
discount (OpenAI: prefixes of 1,024 tokens and more, in 128-token steps, kept for 5-10 minutes
of inactivity and up to an hour; DeepSeek: 64-token units on disk). Each provider's rules
differ and change, so none is assumed: `ServerPrefixCache` remembers the prompts sent to the
server (as `PromptPrefixes`, one digest per message boundary), finds the longest prefix a new
prompt shares with one of them, and multiplies it by a **hit rate learned from the usage the
provider reported** for earlier shared prefixes of about that age. Before any report the rate
is zero: nothing is expected cached until the provider has shown it caches.

Pure: no clock of its own (times are passed in), no I/O. The caller builds the digests (the
live chat model, from LangChain messages; a simulator, from a trace's block hashes).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from langchain_disco.scheduling._validate import MAX_SAMPLE, Fields

PromptPrefixes = Sequence[tuple[bytes, int]]
"""A prompt's prefixes: (digest of everything up to a message boundary, the prompt tokens up
to there), shortest first; the last is the whole prompt."""

AGE_EDGES_S: tuple[float, ...] = (300.0, 1800.0)
"""Hit rates are learned per age of the shared prefix (since it was last sent): under 5
minutes, under 30, older. Providers evict by inactivity, so age is what the rate depends on."""
MAX_AGE_S = 7200.0
"""Prefixes last sent longer ago than this are forgotten: no provider documents keeping them."""
PRIOR_REPORTS = 1.0
"""The rate's prior weight, in reports at rate zero: the provider's first report moves the rate
halfway to what it showed, the second two thirds of the way, whatever the prompts' sizes (a
prior counted in tokens would hold a provider of short prompts at zero for many turns)."""
DECAY = 0.99
"""Per report, the weight left to older ones: a provider that stops caching (or starts) is
re-learned within about a hundred requests."""


@dataclass(frozen=True)
class PrefixMatch:
    """What a prompt shares with one sent to the server before, and what is expected cached."""

    shared_tokens: int = 0
    """Prompt tokens up to the longest message boundary shared with a recent prompt."""
    age_s: float = 0.0
    """Since that prefix was last sent."""
    expected_cached_tokens: int = 0
    """`shared_tokens` times the hit rate learned for prefixes of this age."""


NO_MATCH = PrefixMatch()


class _Rate:
    """Reported cached tokens over predicted shared tokens, exponentially forgetting, shrunk
    towards zero by `PRIOR_REPORTS`: reports / (reports + prior), reports counted with the same
    forgetting (at most 1 / (1 - DECAY) = 100, so a steady provider is under-rated by 1%)."""

    __slots__ = ("predicted", "reported", "reports")

    def __init__(self, predicted: float = 0.0, reported: float = 0.0, reports: float = 0.0):
        self.predicted = predicted
        self.reported = reported
        self.reports = reports

    def observe(self, predicted: float, reported: float) -> None:
        self.predicted = self.predicted * DECAY + predicted
        self.reported = self.reported * DECAY + min(reported, predicted)
        self.reports = self.reports * DECAY + 1.0

    @property
    def value(self) -> float:
        if not self.predicted > 0:
            return 0.0
        return self.reported / self.predicted * (self.reports / (self.reports + PRIOR_REPORTS))


class HitRates:
    """The provider's learned prompt-cache hit rate per age of the shared prefix: what it does
    with a prefix is the provider's behaviour, so it is saved with the profiles (the prefixes
    themselves are not: a provider keeps one for minutes, not across restarts)."""

    def __init__(self, rates: Sequence[_Rate] | None = None) -> None:
        self._rates = list(rates) if rates is not None else []
        self._rates += [_Rate() for _ in range(len(AGE_EDGES_S) + 1 - len(self._rates))]

    def rate(self, age_s: float) -> float:
        """The share of a shared prefix of this age the provider is expected to read cached."""
        return self._rates[_age_bucket(age_s)].value

    def observe(self, age_s: float, predicted_tokens: float, reported_tokens: float) -> None:
        """One report: `reported_tokens` read from the cache of `predicted_tokens` shared."""
        self._rates[_age_bucket(age_s)].observe(predicted_tokens, reported_tokens)

    def buckets(self) -> list[tuple[float, float, float]]:
        """Per age bucket: (its upper edge in s, inf for the last; the rate; the reports it
        rests on, with forgetting)."""
        edges = (*AGE_EDGES_S, float("inf"))
        return [(edge, r.value, r.reports) for edge, r in zip(edges, self._rates, strict=True)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "age_edges_s": list(AGE_EDGES_S),
            "buckets": [
                {"predicted": r.predicted, "reported": r.reported, "reports": r.reports}
                for r in self._rates
            ],
        }

    @classmethod
    def from_dict(cls, data: object, *, path: str = "server_cache") -> HitRates:
        """Rates saved by `to_dict`; `ProfileFormatError` (a `ValueError`) naming the field
        that is missing, of the wrong type or out of range. Rates saved with other age edges
        start afresh."""
        fields = Fields(data, path)
        edges = fields.numbers("age_edges_s", lo=0.0, hi=MAX_AGE_S, max_length=8)
        buckets = fields.items("buckets", max_length=8)
        if tuple(edges) != AGE_EDGES_S or len(buckets) != len(AGE_EDGES_S) + 1:
            return cls()
        rates = []
        for i, bucket in enumerate(buckets):
            b = Fields(bucket, f"{fields.where('buckets')}[{i}]")
            predicted = b.number("predicted", lo=0.0, hi=MAX_SAMPLE)
            # Within rounding of what `observe` keeps them to (reported <= predicted; reports
            # <= 1 / (1 - DECAY)): a file from an older or another version may round apart.
            reported = min(b.number("reported", lo=0.0, hi=MAX_SAMPLE), predicted)
            reports = min(b.number("reports", lo=0.0, hi=MAX_SAMPLE), 1.0 / (1.0 - DECAY))
            rates.append(_Rate(predicted, reported, reports))
        return cls(rates)


class ServerPrefixCache:
    """Recently sent prompt prefixes (bounded, least recently sent forgotten first) and the
    provider's learned hit rate per prefix age."""

    def __init__(self, capacity: int = 4096, rates: HitRates | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._sent: OrderedDict[bytes, float] = OrderedDict()
        self.rates = rates if rates is not None else HitRates()
        """The learned hit rates (`Profiles.server_cache` in a live model: saved with them)."""

    def __len__(self) -> int:
        return len(self._sent)

    def rate(self, age_s: float) -> float:
        """The learned share of a shared prefix of this age the provider reads from its cache."""
        return self.rates.rate(age_s)

    def match(self, prefixes: PromptPrefixes, now_s: float) -> PrefixMatch:
        """The longest prefix of this prompt sent within `MAX_AGE_S`, and what is expected of it."""
        for digest, tokens in reversed(prefixes):
            sent = self._sent.get(digest)
            if sent is None or tokens <= 0:
                continue
            age = max(now_s - sent, 0.0)
            if age > MAX_AGE_S:
                continue
            expected = min(round(tokens * self.rate(age)), tokens)
            return PrefixMatch(tokens, age, expected)
        return NO_MATCH

    def sent(self, prefixes: PromptPrefixes, now_s: float) -> None:
        """Remember that the server was sent this prompt at `now_s` (every prefix of it)."""
        sent = self._sent
        for digest, _ in prefixes:
            sent[digest] = now_s
            sent.move_to_end(digest)
        while len(sent) > self.capacity:
            sent.popitem(last=False)

    def observe(self, match: PrefixMatch, reported_cached_tokens: int) -> None:
        """Learn from the cached tokens the provider reported for a prompt that had `match`
        (on the same token scale). Prompts that shared nothing teach nothing: what a provider
        caches of prefixes it was never sent by us says nothing about the ones it was."""
        if match.shared_tokens <= 0 or not reported_cached_tokens >= 0:
            return
        self.rates.observe(match.age_s, match.shared_tokens, float(reported_cached_tokens))


def _age_bucket(age_s: float) -> int:
    return sum(1 for edge in AGE_EDGES_S if age_s >= edge)
