"""The unified cost model: server dollars plus device energy, in one unit.

What it prices and how the budget spends it: docs/concepts.md (Budget, "What is billed").
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Cost:
    """What one request cost: server USD, device joules, and both in one unit (USD)."""

    server_usd: float = 0.0
    device_j: float = 0.0
    unified_usd: float = 0.0

    def __add__(self, other: Cost) -> Cost:
        return Cost(
            self.server_usd + other.server_usd,
            self.device_j + other.device_j,
            self.unified_usd + other.unified_usd,
        )


@dataclass(frozen=True)
class CostModel:
    """Prices and energy per token, and the exchange rate that puts joules into dollars.

    Defaults (documented in docs/configuration.md):
    - prices: USD 0.15 / 0.60 per 1M input / output tokens (OpenAI gpt-4o-mini list price,
      as published from 2024-07-18 and still listed 2026-11);
    - cached-input price: USD 0.075 per 1M input tokens the provider read from its prompt cache,
      half the input price (gpt-4o-mini-2024-07-18 in OpenAI's "Prompt Caching in the API",
      https://openai.com/index/api-prompt-caching/, 2024-10-01). With nothing cached, the bill
      is what it was before prompt caching was priced;
    - device energy: 0.01 J per prefill token and 0.1 J per decode token, an order-of-magnitude
      assumption for a phone-class SoC running a ~1B model (no measurement in shared/data);
    - exchange rate: USD 0.15 per kWh of electricity = 4.17e-8 USD per joule, which makes the
      device almost free: the server-constrained regime. Raise `usd_per_j` to say "battery
      matters" (device-constrained).
    """

    price_in_per_mtok: float = 0.15
    price_out_per_mtok: float = 0.60
    price_cached_in_per_mtok: float = 0.075
    energy_prefill_j_per_token: float = 0.01
    energy_decode_j_per_token: float = 0.1
    usd_per_j: float = 0.15 / 3.6e6

    def server_usd(
        self, input_tokens: float, output_tokens: float, cached_input: float = 0
    ) -> float:
        """Server bill; a cancelled request still pays its input and the output it produced.

        `cached_input` of the `input_tokens` were read from the provider's prompt cache and are
        billed at `price_cached_in_per_mtok`. A provider cannot cache more than it was sent, so
        it is clamped to `[0, input_tokens]` (for a negative `input_tokens`, a correction taken
        off a bill, nothing counts as cached).
        """
        cached = min(max(cached_input, 0), max(input_tokens, 0))
        return (
            self.price_in_per_mtok * (input_tokens - cached)
            + self.price_cached_in_per_mtok * cached
            + self.price_out_per_mtok * output_tokens
        ) / 1e6

    def device_j(self, input_tokens: float, output_tokens: float) -> float:
        """Device energy for prefilling `input_tokens` and decoding `output_tokens`."""
        return (
            self.energy_prefill_j_per_token * input_tokens
            + self.energy_decode_j_per_token * output_tokens
        )

    def total(self, server_usd: float, device_j: float) -> Cost:
        """A cost from its two amounts: the unified figure prices the energy at `usd_per_j`."""
        return Cost(
            server_usd=server_usd,
            device_j=device_j,
            unified_usd=server_usd + device_j * self.usd_per_j,
        )

    def cost(
        self,
        *,
        server_in: float = 0,
        server_out: float = 0,
        device_in: float = 0,
        device_out: float = 0,
        server_cached_in: float = 0,
    ) -> Cost:
        """The full cost of a request given the tokens each side processed (fractions: a
        prefill cancelled part-way, in the simulator; negative: tokens taken off a bill).
        `server_cached_in` of the `server_in` tokens are billed at the cached-input price."""
        return self.total(
            self.server_usd(server_in, server_out, server_cached_in),
            self.device_j(device_in, device_out),
        )
