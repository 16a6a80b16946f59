"""Where shared state lives: today the budget ledger, in this process or in Redis for a fleet.

`BudgetController` (scheduling/budget.py) accepts any `Ledger`; the default is none at all (the
controller keeps its own totals, exactly as before). `DISCO_STATE_URL=redis://...` attaches a
`RedisLedger`, which every worker of a service shares: see docs/fleet.md.
"""

from langchain_disco.scheduling.budget import Ledger, LedgerTotals
from langchain_disco.state._buckets import Buckets
from langchain_disco.state._urls import redact_url
from langchain_disco.state.local import InProcessLedger
from langchain_disco.state.redis import RedisLedger

__all__ = [
    "Buckets",
    "InProcessLedger",
    "Ledger",
    "LedgerTotals",
    "RedisLedger",
    "redact_url",
]
