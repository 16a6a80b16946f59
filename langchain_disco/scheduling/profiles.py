"""Latency and length profiles, learned online from what requests show, starting from real priors.

- `DeviceProfile`: the device is predictable. TTFT ~ overhead_s + prompt_tokens / prefill_tok_s
  (+ the wait behind other generations, passed in), fitted by exponentially forgotten weighted
  least squares (bounded running moments, solved in closed form: it cannot wind up, lose
  symmetry or overflow, however long it runs); decode rate by an EWMA; the spread around that
  line is kept as an empirical distribution of ratios (measured / predicted), for expectations
  that are not linear in the TTFT. Priors come from `data/device_speeds.csv`.
- `ServerProfile`: the server is not. Its TTFT is kept as an empirical distribution (a bounded,
  seeded reservoir, optionally one per coarse prompt-length bucket); priors are the measured
  llmperf requests of a provider-size (`"together-13b"`), or all of them (`"all"`).
- `LengthProfile`: an empirical distribution of token counts; `Profiles.output_lengths` predicts
  answer lengths (expected cost, remaining tokens), `Profiles.prompt_lengths` is the observed
  prompt-length distribution the budgeted policies calibrate on. Priors: the Azure 2023 trace.

`Profiles.observe(outcome)` feeds one finished request into all of them; the live model and the
simulator both call it, so both learn the same way.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from langchain_disco.errors import ConfigError
from langchain_disco.scheduling import _data
from langchain_disco.scheduling._validate import (
    MAX_ITEMS,
    MAX_SECONDS,
    MAX_TOKENS,
    MIN_S_PER_TOKEN,
    Fields,
    ProfileFormatError,
    integer,
    numbers,
)
from langchain_disco.scheduling.empirical import DEFAULT_CAPACITY, Reservoir
from langchain_disco.scheduling.server_cache import HitRates

if TYPE_CHECKING:
    from langchain_disco.scheduling.dispatch import EndpointOutcome, RequestOutcome

DEFAULT_DEVICE_PRIOR = "2-core x86 cloud VM"
"""The embedded default: Gemma 3 270M through llama-cpp-python on a 2-core x86 machine."""
DEFAULT_SERVER_PRIOR = "all"
"""Every measured hosted-API request pooled: a broad prior for an API we know nothing about."""

_KTOK = 1000.0  # the device fit works in seconds per 1000 tokens, for conditioning
_MIN_TTFT_S = 1e-3
_MIN_SLOPE = 1e-6
_SPREAD_CAPACITY = 256
_SPREAD_MIN_RECENT = 16  # recent TTFTs that replace the prior's ratios
_SPREAD_POINTS = 8
_SPREAD_MIN_PREDICTED_S = 0.01
_SPREAD_MAX_RATIO = 4.0
_JITTER_S = 0.05  # timing noise that does not scale with the prompt (scheduling, I/O)
_MAX_WEIGHT = 1e12  # one observation's weight, after the relative-variance factor
# What a saved profile may hold. A fit's covariance beyond _MAX_COV is a runaway fit (files of
# the recursive least squares this fit replaced); learned spread ratios are clipped at
# _SPREAD_MAX_RATIO and the priors' lie within it; a forgetting factor below one half forgets a
# request at once; the fit's moments stay far below _MAX_MOMENT (weights are bounded).
_MAX_COV = 1e150
_MAX_MOMENT = 1e200
_MAX_SAVED_SPREAD = 100.0
_MIN_FORGETTING = 0.5
_MAX_BUCKETS = 1_000


def _decode_alpha(n: int) -> float:
    """EWMA weight: a plain mean for the first observations, then a floor that tracks drift."""
    return max(1.0 / (n + 2), 0.05)


class DeviceProfile:
    """Predicts the local model's TTFT from the prompt length; learns from every local request.

    The fit is weighted least squares of `ttft_s = overhead_s + slope * prompt_tokens / 1000`
    in which each earlier request's weight is multiplied by `forgetting` per new one (old
    requests fade; a few hundred recent ones dominate), plus a ridge of strength `prior_weight`
    towards the prior line, which keeps the fit defined when the prompts tell nothing about
    the slope (all of one length) and otherwise counts for about `prior_weight` observations.

    It keeps weighted running moments (total weight, means, centred second moments), updated
    as West's weighted Welford recurrences and solved in closed form per update, instead of
    recursive least squares: RLS's covariance grows by 1/forgetting per observation in any
    direction the prompts do not excite and loses symmetry to rounding, and diverged (838x off
    after 6,000 noisy observations, overflow after ~75,000, NaN after ~150,000 noise-free ones).
    These moments are bounded by the largest weight over 1 - forgetting, and the 2x2 system's
    determinant is at least `prior_weight` squared, so no sequence of finite observations can
    make the line non-finite.
    """

    def __init__(
        self,
        name: str,
        *,
        overhead_s: float,
        prefill_tok_s: float,
        decode_tok_s: float,
        prior_weight: float = 0.01,
        forgetting: float = 0.995,
    ) -> None:
        if prefill_tok_s <= 0 or decode_tok_s <= 0:
            raise ValueError("prefill_tok_s and decode_tok_s must be > 0")
        if not 0 < forgetting <= 1 or prior_weight <= 0:
            raise ValueError("forgetting must be in (0, 1] and prior_weight > 0")
        self.name = name
        self.forgetting = forgetting
        self.prior_weight = prior_weight
        self._prior = (float(overhead_s), _KTOK / prefill_tok_s)
        self._theta = self._prior
        # Weighted moments of (x = prompt_tokens / 1000, y = ttft_s): total weight, means,
        # centred sums of squares and cross-products.
        self._w = self._mx = self._my = self._cxx = self._cxy = 0.0
        self._ref_s = self._scale_s()
        self._s_per_token = 1.0 / decode_tok_s
        # The spread: the last _SPREAD_CAPACITY unselected TTFTs, as (prompt_tokens, ttft_s),
        # whose ratios are taken to the *current* line when asked for. Ratios stored as they
        # were measured kept a wrong prior's misfits (clipped at 4.0) forever.
        self._prior_ratios: list[float] = [1.0]
        self._recent: deque[tuple[int, float]] = deque(maxlen=_SPREAD_CAPACITY)
        self._spread_cache: tuple[int, list[float]] | None = None
        self.n_ttft = 0
        self.n_decode = 0

    @property
    def overhead_s(self) -> float:
        return max(self._theta[0], 0.0)

    def _scale_s(self) -> float:
        """The line's TTFT at 1000 tokens: the scale the fit's relative weights refer to."""
        return max(self.predict_ttft_s(int(_KTOK)), _JITTER_S)

    @property
    def max_weight(self) -> float:
        """The most one observation may count: half the fit's memory, 1 / (1 - forgetting)."""
        return 0.5 / (1.0 - self.forgetting) if self.forgetting < 1.0 else float("inf")

    @property
    def prefill_tok_s(self) -> float:
        return _KTOK / max(self._theta[1], _MIN_SLOPE)

    @property
    def decode_tok_s(self) -> float:
        return 1.0 / self._s_per_token

    def predict_ttft_s(self, prompt_tokens: int, queue_wait_s: float = 0.0) -> float:
        """Predicted time to first token: queue wait + overhead + prefill."""
        a, b = self._theta
        prefill = a + max(b, _MIN_SLOPE) * prompt_tokens / _KTOK
        return max(queue_wait_s, 0.0) + max(prefill, _MIN_TTFT_S)

    def observe(
        self,
        prompt_tokens: int,
        ttft_s: float,
        decode_tok_s: float | None = None,
        *,
        weight: float = 1.0,
        selected: bool = False,
    ) -> None:
        """Learn from one local request; `ttft_s` excludes any wait behind other generations.

        `weight` > 1 counts the observation several times: `Profiles.observe` passes the inverse
        of the chance that this TTFT could be seen at all (a racing server cancels the device
        unless the device is first, so raced devices are seen mostly when fast). A `selected`
        TTFT (one seen only because it beat a racing server) does not enter the spread.
        Non-finite or out-of-range values are ignored: nothing non-finite is ever learned.
        """
        if (
            0 < ttft_s <= MAX_SECONDS
            and 0 <= prompt_tokens <= MAX_TOKENS
            and 0 < weight < float("inf")
        ):
            predicted = self.predict_ttft_s(prompt_tokens)
            if not selected:
                self._recent.append((int(prompt_tokens), float(ttft_s)))
            # Weighted by the inverse of the variance expected at this prediction: a device runs
            # a few tens of percent faster or slower from one request to the next, so noise
            # grows with the TTFT. Unweighted, the longest prompts' seconds of noise would set
            # the intercept, and short prompts (where a device wins races) would be mispredicted.
            # Relative to a 1000-token prompt, so the prior keeps its meaning on any device.
            weight *= (self._ref_s**2 + _JITTER_S**2) / (predicted**2 + _JITTER_S**2)
            self._learn(prompt_tokens / _KTOK, ttft_s, min(weight, _MAX_WEIGHT))
            self.n_ttft += 1
        if decode_tok_s is not None and 0 < decode_tok_s < float("inf"):
            alpha = _decode_alpha(self.n_decode)
            self._s_per_token += alpha * (1.0 / decode_tok_s - self._s_per_token)
            self._s_per_token = min(max(self._s_per_token, MIN_S_PER_TOKEN), MAX_SECONDS)
            self.n_decode += 1

    def _learn(self, x: float, y: float, weight: float) -> None:
        """Fade the moments by `forgetting`, add (x, y) with `weight`, and re-solve the line."""
        lam = self.forgetting
        w = lam * self._w + weight
        if not weight > 0 or not w > 0:  # a weight that underflowed: nothing to learn
            return
        dx, dy = x - self._mx, y - self._my
        share = weight / w
        self._mx += share * dx
        self._my += share * dy
        # A sum of squares: never below zero (rounding could take it there when one weight
        # dwarfs all the others).
        self._cxx = max(lam * self._cxx + weight * dx * (x - self._mx), 0.0)
        self._cxy = lam * self._cxy + weight * dx * (y - self._my)
        self._w = w
        self._theta = self._solve()

    def _solve(self) -> tuple[float, float]:
        """The ridge-regularised weighted least-squares line through the moments.

        Minimises sum w (y - a - b x)^2 + r ((a - a0)^2 + (b - b0)^2), whose normal equations
        in centred moments are [[W + r, W mx], [W mx, Cxx + W mx^2 + r]] (a, b) = (W my + r a0,
        Cxy + W mx my + r b0); the determinant W Cxx + r (W + Cxx + W mx^2) + r^2 > 0.
        """
        r = self.prior_weight
        a0, b0 = self._prior
        w, mx, my, cxx, cxy = self._w, self._mx, self._my, self._cxx, self._cxy
        s_xx = cxx + w * mx * mx
        m00, m01, m11 = w + r, w * mx, s_xx + r
        v0, v1 = w * my + r * a0, cxy + w * mx * my + r * b0
        det = w * cxx + r * (w + s_xx) + r * r
        a = (m11 * v0 - m01 * v1) / det
        b = (m00 * v1 - m01 * v0) / det
        # Within what a saved line may hold (a day per 1000 tokens is already absurd), so the
        # fit never writes a file it would refuse to read.
        return (min(max(a, -MAX_SECONDS), MAX_SECONDS), min(max(b, -MAX_SECONDS), MAX_SECONDS))

    def spread(self, points: int = _SPREAD_POINTS) -> list[float]:
        """`points` equally likely ratios of TTFT to its prediction (mid-quantiles of those
        measured): average over `predict_ttft_s(...) * r` for an expectation that is not linear
        in the device's TTFT, such as the energy of a race it may or may not win.

        The ratios are those of the recent unselected TTFTs to the line as it is now (with
        fewer than 16, the prior's measured ratios join them): relative spread, a
        multiplicative model of a device that runs faster or slower from one request to the
        next. Where the line predicts almost nothing (a tiny prompt below a misfit intercept)
        a ratio says nothing and is left out; a device far off its own line is a misfit, not
        spread: clipped at 4x either way.
        """
        ratios = self._ratios()
        n = len(ratios)
        # Reservoir.quantile's nearest rank, on the sorted ratios.
        return [
            ratios[min(max(1, math.ceil((i + 0.5) / points * n - 1e-9)), n) - 1]
            for i in range(points)
        ]

    def _ratios(self) -> list[float]:
        """The sorted ratios `spread` takes its quantiles of, cached until the next TTFT."""
        version = self.n_ttft
        if self._spread_cache is not None and self._spread_cache[0] == version:
            return self._spread_cache[1]
        # predict_ttft_s inlined (this runs after every device observation, over 256 TTFTs).
        a, b = self._theta
        b = max(b, _MIN_SLOPE)
        lo, hi, least = 1 / _SPREAD_MAX_RATIO, _SPREAD_MAX_RATIO, _SPREAD_MIN_PREDICTED_S
        ratios = []
        for tokens, ttft_s in self._recent:
            predicted = a + b * tokens / _KTOK
            if predicted < _MIN_TTFT_S:
                predicted = _MIN_TTFT_S
            if predicted >= least:
                r = ttft_s / predicted
                ratios.append(lo if r < lo else hi if r > hi else r)
        if len(ratios) < _SPREAD_MIN_RECENT:
            ratios += self._prior_ratios
        ratios.sort()
        self._spread_cache = (version, ratios)
        return ratios

    @classmethod
    def prior(cls, device: str) -> DeviceProfile:
        """The prior for a device of `data/device_speeds.csv`, e.g. `"Galaxy S25"`.

        Rows with measured TTFT at several prompt lengths are fitted by least squares (through
        the origin if the intercept comes out negative, as attention makes long prompts
        superlinear); rows with only a prefill rate get no overhead (none was measured).
        """
        rows = _data.device_rows().get(device)
        if rows is None:
            raise ConfigError(
                f"unknown device prior {device!r}; known devices: "
                f"{', '.join(sorted(_data.device_rows()))}."
            )
        overhead, slope = fit_ttft_line(
            [(r.prompt_tokens, r.ttft_s) for r in rows if r.prompt_tokens and r.ttft_s]
        )
        if slope is None:
            rates = [r.prefill_tok_s for r in rows if r.prefill_tok_s]
            if not rates:
                raise ConfigError(f"device prior {device!r} has neither TTFT nor prefill figures")
            overhead, slope = 0.0, 1.0 / (sum(rates) / len(rates))
        decodes = [r.decode_tok_s for r in rows if r.decode_tok_s]
        decode = sum(decodes) / len(decodes) if decodes else 10.0
        out = cls(device, overhead_s=overhead, prefill_tok_s=1.0 / slope, decode_tok_s=decode)
        ratios = [
            r.ttft_s / out.predict_ttft_s(r.prompt_tokens)
            for r in rows
            if r.prompt_tokens and r.ttft_s
        ]
        if len(ratios) > 1:  # the measured spread around the fitted line, as the prior spread
            mean = sum(ratios) / len(ratios)
            out._prior_ratios = [x / mean for x in ratios]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "theta": list(self._theta),
            "prior": list(self._prior),
            "prior_weight": self.prior_weight,
            "moments": {
                "w": self._w,
                "mean_x": self._mx,
                "mean_y": self._my,
                "cxx": self._cxx,
                "cxy": self._cxy,
            },
            "s_per_token": self._s_per_token,
            "spread_prior": list(self._prior_ratios),
            "spread_recent": [[tokens, ttft_s] for tokens, ttft_s in self._recent],
            "ref_s": self._ref_s,
            "forgetting": self.forgetting,
            "n_ttft": self.n_ttft,
            "n_decode": self.n_decode,
        }

    @classmethod
    def from_dict(cls, data: object, *, path: str = "device") -> DeviceProfile:
        """A profile saved by `to_dict`; `ProfileFormatError` (a `ValueError`) naming the field
        under `path` when one is missing, of the wrong type or implausible."""
        fields = Fields(data, path)
        theta = fields.numbers("theta", lo=-MAX_SECONDS, hi=MAX_SECONDS, length=2)
        s_per_token = fields.number("s_per_token", lo=MIN_S_PER_TOKEN, hi=MAX_SECONDS)
        out = cls(
            fields.text("name"),
            overhead_s=0.0,
            prefill_tok_s=1.0,
            decode_tok_s=1.0 / s_per_token,
            forgetting=fields.number("forgetting", lo=_MIN_FORGETTING, hi=1.0),
        )
        out._s_per_token = s_per_token  # as saved, not through 1 / (1 / x)
        if "moments" in fields:
            prior = fields.numbers("prior", lo=-MAX_SECONDS, hi=MAX_SECONDS, length=2)
            out._prior = (prior[0], prior[1])
            out.prior_weight = fields.number("prior_weight", lo=1e-12, hi=_MAX_MOMENT)
            moments = Fields(fields.get("moments"), fields.where("moments"))
            out._w = moments.number("w", lo=0.0, hi=_MAX_MOMENT)
            out._mx = moments.number("mean_x", lo=0.0, hi=MAX_TOKENS / _KTOK)
            out._my = moments.number("mean_y", lo=0.0, hi=MAX_SECONDS)
            out._cxx = moments.number("cxx", lo=0.0, hi=_MAX_MOMENT)
            out._cxy = moments.number("cxy", lo=-_MAX_MOMENT, hi=_MAX_MOMENT)
            out._theta = out._solve()
        else:
            # A file of the recursive least squares fit: its line becomes the prior (checked
            # first: a diverged fit is refused, not continued).
            _covariance(fields)
            out._prior = out._theta = (theta[0], theta[1])
        # The scale the fit's weights are relative to; files written before it was kept use
        # the loaded line's.
        if "ref_s" in fields:
            out._ref_s = fields.number("ref_s", lo=_MIN_TTFT_S, hi=MAX_SECONDS)
        else:
            out._ref_s = out._scale_s()
        if "spread_prior" in fields:
            prior_ratios = fields.numbers(
                "spread_prior", lo=1 / _MAX_SAVED_SPREAD, hi=_MAX_SAVED_SPREAD
            )
            if not prior_ratios:
                raise ProfileFormatError(f"{fields.where('spread_prior')} is empty")
            out._prior_ratios = prior_ratios
            where = fields.where("spread_recent")
            for i, pair in enumerate(fields.items("spread_recent", max_length=_SPREAD_CAPACITY)):
                tokens, ttft_s = numbers(pair, f"{where}[{i}]", lo=0.0, hi=MAX_TOKENS, length=2)
                if tokens != int(tokens) or not 0 < ttft_s <= MAX_SECONDS:
                    raise ProfileFormatError(
                        f"{where}[{i}] is {pair}, expected [prompt tokens, TTFT in seconds]"
                    )
                out._recent.append((int(tokens), ttft_s))
        elif "spread" in fields:
            # Ratios as they were measured, of files written before the recent TTFTs were
            # kept: the prior's ratios from now on (absent in files older still).
            spread = fields.where("spread")
            saved = Reservoir.from_dict(
                fields.get("spread"), path=spread, max_value=_MAX_SAVED_SPREAD
            )
            if not len(saved):
                raise ProfileFormatError(f"{spread}.samples is empty, expected a sample")
            out._prior_ratios = [r for r in saved.samples if r > 0] or [1.0]
        out.n_ttft, out.n_decode = fields.integer("n_ttft"), fields.integer("n_decode")
        return out

    def __repr__(self) -> str:
        return (
            f"DeviceProfile({self.name!r}, overhead_s={self.overhead_s:.3f}, "
            f"prefill_tok_s={self.prefill_tok_s:.1f}, decode_tok_s={self.decode_tok_s:.1f})"
        )


def _covariance(fields: Fields) -> list[list[float]]:
    """The fit's saved 2x2 covariance: finite, bounded and positive semi-definite (its update
    divides by `x^T P x + ...`, which a matrix that is not could drive to zero)."""
    where = fields.where("cov")
    rows = fields.items("cov", length=2)
    cov = [
        numbers(row, f"{where}[{i}]", lo=-_MAX_COV, hi=_MAX_COV, length=2)
        for i, row in enumerate(rows)
    ]
    (p00, p01), (p10, p11) = cov
    off = (p01 + p10) / 2
    # Rounding leaves a learned matrix a hair off symmetric and off singular; allow for it.
    if p00 < 0 or p11 < 0 or off * off > p00 * p11 * (1 + 1e-6) + 1e-300:
        raise ProfileFormatError(f"{where} is {cov}, not a covariance (positive semi-definite)")
    return cov


def fit_ttft_line(points: Iterable[tuple[int | None, float | None]]) -> tuple[float, float | None]:
    """Least-squares `ttft_s = overhead + slope * tokens` (slope in s/token; None if unfit)."""
    pts = [(float(x), float(y)) for x, y in points if x is not None and y is not None]
    if len({x for x, _ in pts}) < 2:
        return 0.0, None
    n = len(pts)
    mx = sum(x for x, _ in pts) / n
    my = sum(y for _, y in pts) / n
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    slope = sum((x - mx) * (y - my) for x, y in pts) / sxx
    overhead = my - slope * mx
    if overhead < 0 or slope <= 0:
        overhead = 0.0
        slope = sum(x * y for x, y in pts) / sum(x * x for x, _ in pts)
    return overhead, slope


class ServerProfile:
    """The server's TTFT distribution (empirical) and decode rate, learned per endpoint.

    With `bucket_edges` (prompt tokens, ascending), each coarse prompt-length bucket keeps its own
    reservoir and is used once it holds `min_bucket_samples`; until then the pooled one answers.

    Requests the provider answered mostly from its prompt cache (at least half of the prompt
    reported cached) are learned apart, in `warm`: their TTFTs say nothing about a fresh
    prompt's, and mixed in they would make every fresh prompt look as fast as a follow-up
    turn. A request expected to be mostly cached is predicted from `warm` once it holds
    `min_bucket_samples`; until then, conservatively, from the fresh distribution.
    """

    def __init__(
        self,
        name: str,
        samples: Iterable[float] = (),
        *,
        decode_tok_s: float = 50.0,
        capacity: int = DEFAULT_CAPACITY,
        seed: int = 0,
        bucket_edges: tuple[int, ...] = (),
        min_bucket_samples: int = 32,
    ) -> None:
        if list(bucket_edges) != sorted(bucket_edges):
            raise ValueError("bucket_edges must be ascending")
        self.name = name
        self.ttft = Reservoir(samples, capacity=capacity, seed=seed)
        if not len(self.ttft):
            raise ValueError("a server profile needs at least one prior TTFT sample")
        self.bucket_edges = tuple(bucket_edges)
        self.min_bucket_samples = min_bucket_samples
        self._buckets = [
            Reservoir(capacity=capacity, seed=seed + 1 + i) for i in range(len(bucket_edges) + 1)
        ]
        self.warm = Reservoir(capacity=capacity, seed=seed + 9973)
        self._impute_rng = random.Random(seed + 7919)
        self._s_per_token = 1.0 / decode_tok_s
        self.n_decode = 0

    def distribution(self, prompt_tokens: int | None = None, cached_tokens: int = 0) -> Reservoir:
        """The reservoir that answers for a prompt of this length, of which the provider is
        expected to read `cached_tokens` from its prompt cache."""
        if _warm(prompt_tokens, cached_tokens) and len(self.warm) >= self.min_bucket_samples:
            return self.warm
        if prompt_tokens is not None and self.bucket_edges:
            bucket = self._buckets[self._bucket(prompt_tokens)]
            if len(bucket) >= self.min_bucket_samples:
                return bucket
        return self.ttft

    def _bucket(self, prompt_tokens: int) -> int:
        return sum(1 for edge in self.bucket_edges if prompt_tokens >= edge)

    @property
    def decode_tok_s(self) -> float:
        return 1.0 / self._s_per_token

    @property
    def mean_ttft_s(self) -> float:
        return self.ttft.mean()

    def quantile(self, q: float, prompt_tokens: int | None = None) -> float:
        return self.distribution(prompt_tokens).quantile(q)

    def cdf(self, t: float, prompt_tokens: int | None = None) -> float:
        """P(S < t): the chance the server's first token comes before `t` seconds."""
        return self.distribution(prompt_tokens).cdf(t)

    p_first = cdf
    """P(S < d): the server beats something that answers at `d`."""

    def expected_min_with(self, d: float, prompt_tokens: int | None = None) -> float:
        """E[min(S, d)]: expected TTFT when racing something that answers at `d`."""
        return self.distribution(prompt_tokens).expected_min(d)

    def observe(
        self,
        ttft_s: float,
        decode_tok_s: float | None = None,
        prompt_tokens: int | None = None,
        cached_tokens: int = 0,
    ) -> None:
        """Record a first token that came `ttft_s` after the server request started; the
        provider read `cached_tokens` of the `prompt_tokens` from its prompt cache."""
        if ttft_s >= 0 and ttft_s == ttft_s and _warm(prompt_tokens, cached_tokens):
            self.warm.add(ttft_s)
        elif ttft_s >= 0 and ttft_s == ttft_s:
            self.ttft.add(ttft_s)
            if prompt_tokens is not None and self.bucket_edges:
                self._buckets[self._bucket(prompt_tokens)].add(ttft_s)
        if decode_tok_s is not None and decode_tok_s > 0:
            alpha = _decode_alpha(self.n_decode)
            self._s_per_token += alpha * (1.0 / decode_tok_s - self._s_per_token)
            self.n_decode += 1

    def observe_censored(
        self, at_least_s: float, prompt_tokens: int | None = None, cached_tokens: int = 0
    ) -> None:
        """Record a server request cancelled `at_least_s` after it started, before any token.

        Dropping these would erase exactly the slow tail a hedge is for; instead one value is
        imputed from the current distribution conditioned on S >= at_least_s (the bound itself
        when no sample is that slow), which keeps the empirical distribution unbiased.
        """
        if not at_least_s >= 0:
            return
        dist = self.distribution(prompt_tokens, cached_tokens)
        value = dist.draw_at_least(at_least_s, self._impute_rng)
        self.observe(value, prompt_tokens=prompt_tokens, cached_tokens=cached_tokens)

    @classmethod
    def prior(
        cls,
        name: str,
        *,
        capacity: int = DEFAULT_CAPACITY,
        seed: int = 0,
        bucket_edges: tuple[int, ...] = (),
    ) -> ServerProfile:
        """Measured llmperf requests of `name` (`"together-13b"`, ...) or `"all"` pooled."""
        measured = _data.server_samples()
        if name == "all":
            rows = [s for samples in measured.values() for s in samples]
        elif name in measured:
            rows = list(measured[name])
        else:
            raise ConfigError(
                f"unknown server prior {name!r}; valid: all, {', '.join(sorted(measured))}."
            )
        return cls.from_samples(name, rows, capacity=capacity, seed=seed, bucket_edges=bucket_edges)

    @classmethod
    def from_samples(
        cls,
        name: str,
        samples: Iterable[_data.ServerSample],
        *,
        capacity: int = DEFAULT_CAPACITY,
        seed: int = 0,
        bucket_edges: tuple[int, ...] = (),
    ) -> ServerProfile:
        """A prior from measured requests (TTFT and decode gap each), e.g. a user's own CSV."""
        rows = list(samples)
        if not rows:
            raise ConfigError(f"server prior {name!r} has no measured requests")
        if len(rows) > capacity:
            rows = random.Random(seed).sample(rows, capacity)
        gaps = [s.inter_token_s for s in rows if s.inter_token_s > 0]
        decode = len(gaps) / sum(gaps) if gaps else 50.0
        return cls(
            name,
            [s.ttft_s for s in rows],
            decode_tok_s=decode,
            capacity=capacity,
            seed=seed,
            bucket_edges=bucket_edges,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ttft": self.ttft.to_dict(),
            "bucket_edges": list(self.bucket_edges),
            "min_bucket_samples": self.min_bucket_samples,
            "buckets": [b.to_dict() for b in self._buckets],
            "warm": self.warm.to_dict(),
            "s_per_token": self._s_per_token,
            "n_decode": self.n_decode,
        }

    @classmethod
    def from_dict(cls, data: object, *, path: str = "server") -> ServerProfile:
        """A profile saved by `to_dict`; `ProfileFormatError` (a `ValueError`) naming the field
        under `path` when one is missing, of the wrong type or implausible."""
        fields = Fields(data, path)
        ttft = Reservoir.from_dict(
            fields.get("ttft"), path=fields.where("ttft"), max_value=MAX_SECONDS
        )
        if not len(ttft):
            raise ProfileFormatError(f"{fields.where('ttft')}.samples is empty, expected a sample")
        where = fields.where("bucket_edges")
        edges = tuple(
            integer(e, f"{where}[{i}]", hi=int(MAX_TOKENS))
            for i, e in enumerate(fields.items("bucket_edges", max_length=_MAX_BUCKETS))
        )
        if list(edges) != sorted(edges):
            raise ProfileFormatError(f"{where} is {list(edges)}, expected ascending edges")
        where = fields.where("buckets")
        buckets = [
            Reservoir.from_dict(b, path=f"{where}[{i}]", max_value=MAX_SECONDS)
            for i, b in enumerate(fields.items("buckets", length=len(edges) + 1))
        ]
        s_per_token = fields.number("s_per_token", lo=MIN_S_PER_TOKEN, hi=MAX_SECONDS)
        out = cls(
            fields.text("name"),
            ttft.samples[:1],
            decode_tok_s=1.0 / s_per_token,
            capacity=ttft.capacity,
            seed=ttft.seed,
            bucket_edges=edges,
            min_bucket_samples=fields.integer("min_bucket_samples", hi=MAX_ITEMS),
        )
        out.ttft, out._buckets, out.n_decode = ttft, buckets, fields.integer("n_decode")
        if fields.optional("warm") is not None:  # files from before it was learned lack it
            out.warm = Reservoir.from_dict(
                fields.get("warm"), path=fields.where("warm"), max_value=MAX_SECONDS
            )
        return out

    def __repr__(self) -> str:
        return (
            f"ServerProfile({self.name!r}, n={len(self.ttft)}, "
            f"p50={self.quantile(0.5):.3f}s, p99={self.quantile(0.99):.3f}s, warm={len(self.warm)})"
        )


class LengthProfile:
    """An empirical distribution of token counts (answer or prompt lengths)."""

    def __init__(
        self, samples: Iterable[float] = (), *, capacity: int = DEFAULT_CAPACITY, seed: int = 0
    ) -> None:
        self.tokens = Reservoir(samples, capacity=capacity, seed=seed)
        if not len(self.tokens):
            raise ValueError("a length profile needs at least one prior sample")

    def observe(self, tokens: int) -> None:
        if tokens >= 0:
            self.tokens.add(tokens)

    def expected(self, max_tokens: int | None = None) -> float:
        """E[tokens], or E[min(tokens, max_tokens)] under a cap."""
        if max_tokens is None:
            return self.tokens.mean()
        return self.tokens.expected_min(max_tokens + 0.5)

    def expected_remaining(self, produced: int, max_tokens: int | None = None) -> float:
        """E[tokens - produced | tokens > produced]: what is left of an answer under way."""
        remaining = self.tokens.expected_excess(produced)
        if remaining <= 0:
            remaining = 1.0  # longer than anything seen: expect it to end soon
        if max_tokens is not None:
            remaining = min(remaining, max(max_tokens - produced, 0))
        return remaining

    def quantile(self, q: float) -> float:
        return self.tokens.quantile(q)

    @classmethod
    def output_prior(cls, *, capacity: int = DEFAULT_CAPACITY, seed: int = 0) -> LengthProfile:
        """Answer lengths of the Azure 2023 conversation trace (a seeded subsample)."""
        return cls._prior(_data.azure_conv_lengths()[1], capacity, seed)

    @classmethod
    def prompt_prior(cls, *, capacity: int = DEFAULT_CAPACITY, seed: int = 0) -> LengthProfile:
        """Prompt lengths of the Azure 2023 conversation trace (a seeded subsample)."""
        return cls._prior(_data.azure_conv_lengths()[0], capacity, seed)

    @classmethod
    def _prior(cls, values: tuple[int, ...], capacity: int, seed: int) -> LengthProfile:
        picked = random.Random(seed).sample(values, min(capacity, len(values)))
        return cls([float(v) for v in picked], capacity=capacity, seed=seed)

    def to_dict(self) -> dict[str, Any]:
        return self.tokens.to_dict()

    @classmethod
    def from_dict(cls, data: object, *, path: str = "lengths") -> LengthProfile:
        """A profile saved by `to_dict`; `ProfileFormatError` (a `ValueError`) naming the field
        under `path` when one is missing, of the wrong type or implausible."""
        tokens = Reservoir.from_dict(data, path=path, max_value=MAX_TOKENS)
        if not len(tokens):
            raise ProfileFormatError(f"{path}.samples is empty, expected a sample")
        out = cls([0.0])
        out.tokens = tokens
        return out


OutputLengthProfile = LengthProfile
"""The output-length model is a `LengthProfile` over answer lengths."""


@dataclass
class Profiles:
    """Everything a policy knows about the endpoints and the workload."""

    device: DeviceProfile
    server: ServerProfile
    output_lengths: LengthProfile
    prompt_lengths: LengthProfile
    continuation: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Probed continuation verdicts per ``base_url|model`` (`endpoints/_probe.py`); kept here
    so they persist with what was learned, and `disco profile show` lists them."""
    server_cache: HitRates = field(default_factory=HitRates)
    """The provider's learned prompt-cache hit rates (`server_cache.ServerPrefixCache`)."""

    @classmethod
    def prior(
        cls,
        device: str = DEFAULT_DEVICE_PRIOR,
        server: str = DEFAULT_SERVER_PRIOR,
        *,
        seed: int = 0,
        server_bucket_edges: tuple[int, ...] = (),
    ) -> Profiles:
        """Priors from the bundled data, e.g. `Profiles.prior("Galaxy S25", "together-13b")`."""
        return cls(
            device=DeviceProfile.prior(device),
            server=ServerProfile.prior(server, seed=seed, bucket_edges=server_bucket_edges),
            output_lengths=LengthProfile.output_prior(seed=seed + 1),
            prompt_lengths=LengthProfile.prompt_prior(seed=seed + 2),
        )

    def observe(self, outcome: RequestOutcome) -> None:
        """Learn from one finished request: TTFTs (cancelled servers as censored), lengths."""
        prompt = outcome.request.prompt_tokens
        self.prompt_lengths.observe(prompt)
        for run in outcome.endpoints:
            if run.failed:
                continue
            if run.endpoint == "remote":
                if run.first_token_s is not None:
                    cached = prompt - _evaluated(prompt, run)
                    ttft = run.first_token_s - run.started_s
                    self.server.observe(ttft, run.decode_tok_s, prompt, cached)
                elif run.ended_s is not None:  # no usage came: as cached as it was expected
                    cached = outcome.request.remote_cached_tokens
                    self.server.observe_censored(run.ended_s - run.started_s, prompt, cached)
            elif run.first_token_s is not None:
                ttft = run.first_token_s - run.started_s - run.queue_wait_s
                weight = 1.0
                remote_at = outcome.plan.offset("remote")
                selected = remote_at is not None and run.first_token_s > remote_at
                if remote_at is not None and selected:
                    # Seen only because the server was slower still: inverse-probability
                    # weight, bounded twice. n samples cannot tell a chance below 1/(n+1)
                    # (slower than all of them); and no single request may outweigh half of
                    # what the device fit remembers, or one lucky draw would move the line.
                    dist = self.server.distribution(prompt)
                    seen = 1.0 - dist.cdf(run.first_token_s - remote_at)
                    weight = min(1.0 / max(seen, 1.0 / (len(dist) + 1)), self.device.max_weight)
                self.device.observe(
                    _evaluated(prompt, run),
                    ttft,
                    run.decode_tok_s,
                    weight=weight,
                    selected=selected,
                )
        if outcome.winner is not None and outcome.output_tokens > 0:
            self.output_lengths.observe(outcome.output_tokens)

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device.to_dict(),
            "server": self.server.to_dict(),
            "output_lengths": self.output_lengths.to_dict(),
            "prompt_lengths": self.prompt_lengths.to_dict(),
            "continuation": {k: dict(v) for k, v in self.continuation.items()},
            "server_cache": self.server_cache.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: object, *, path: str = "profiles") -> Profiles:
        """Profiles saved by `to_dict`, every number checked before it can reach a policy;
        `ProfileFormatError` (a `ValueError`) naming the first field that is missing, of the
        wrong type or implausible."""
        fields = Fields(data, path)
        return cls(
            device=DeviceProfile.from_dict(fields.get("device"), path=fields.where("device")),
            server=ServerProfile.from_dict(fields.get("server"), path=fields.where("server")),
            output_lengths=LengthProfile.from_dict(
                fields.get("output_lengths"), path=fields.where("output_lengths")
            ),
            prompt_lengths=LengthProfile.from_dict(
                fields.get("prompt_lengths"), path=fields.where("prompt_lengths")
            ),
            continuation=_verdicts_from(fields.optional("continuation")),
            server_cache=HitRates()  # files from before it was saved
            if "server_cache" not in fields
            else HitRates.from_dict(fields.get("server_cache"), path=fields.where("server_cache")),
        )


def _warm(prompt_tokens: int | None, cached_tokens: int) -> bool:
    """Whether the provider reads (or is expected to read) most of the prompt from its cache."""
    return prompt_tokens is not None and cached_tokens > 0 and 2 * cached_tokens >= prompt_tokens


def _evaluated(prompt_tokens: int, run: EndpointOutcome) -> int:
    """The prompt tokens a device run evaluated: `prompt_tokens` less the share the run read
    from its KV cache (as the endpoint counted them; the request's own count may be an
    estimate on another scale). A cached turn is learned as the short prefill it was, never as
    the whole prompt prefilled fast (which taught a line that predicted 1 ms for 900 tokens)."""
    cached, total = run.cached_input_tokens, run.input_tokens
    if cached <= 0 or total <= 0:
        return prompt_tokens
    return max(round(prompt_tokens * (1.0 - min(cached, total) / total)), 1)


def _verdicts_from(data: object) -> dict[str, dict[str, Any]]:
    """The remembered verdicts of an older or hand-edited file: absent or odd entries dropped
    (the endpoint checks each verdict's fields again before it trusts one)."""
    if not isinstance(data, dict):
        return {}
    return {k: dict(v) for k, v in data.items() if isinstance(k, str) and isinstance(v, dict)}
