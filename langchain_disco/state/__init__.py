"""Where shared state lives: the budget ledger and the learned profiles, in this process (and
the profile file) or in Redis for a fleet.

`BudgetController` (scheduling/budget.py) accepts any `Ledger`; the default is none at all (the
controller keeps its own totals, exactly as before). `DISCO_STATE_URL=redis://...` attaches a
`RedisLedger`, and shares the learned profiles through a `RedisProfileStore`, across every
worker of a service: see docs/fleet.md.
"""

from langchain_disco.scheduling.budget import Ledger, LedgerTotals
from langchain_disco.state._buckets import Buckets
from langchain_disco.state._urls import redact_url
from langchain_disco.state.local import InProcessLedger
from langchain_disco.state.redis import RedisLedger
from langchain_disco.state.redis_profiles import RedisProfileStore

__all__ = [
    "Buckets",
    "InProcessLedger",
    "Ledger",
    "LedgerTotals",
    "RedisLedger",
    "RedisProfileStore",
    "redact_url",
]
