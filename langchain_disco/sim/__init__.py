"""Trace replay: the scheduling objects of the live model, on a virtual clock.

```python
from langchain_disco.scheduling import Budget, LengthThreshold
from langchain_disco.sim import SimConfig, Simulator, load_trace

config = SimConfig(device="MacBook Pro M1 Max", server="together-13b")
sim = Simulator(load_trace(limit=10_000), config)
budget = Budget(share=0.3, resource="server")
result = sim.run(LengthThreshold(budget), budget)
print(result.metrics.mean_ttft_s, result.metrics.realised_share, sim.oracle(budget).mean_ttft_s)

# Token-level migration and paced delivery, with the live engine's migration policy:
from langchain_disco.scheduling.migration import CostAwareMigration

moved = sim.run(LengthThreshold(budget), budget, migration=CostAwareMigration(), pace_tok_s=10)
print(moved.metrics.mean_cost_usd, moved.metrics.mean_cost_without_migration_usd)
```
"""

from langchain_disco.sim.metrics import RunMetrics, percentile, ratio, summarize
from langchain_disco.sim.oracle import OracleResult, solve_oracle
from langchain_disco.sim.simulator import SimConfig, SimDevice, SimResult, Simulator
from langchain_disco.sim.trace import Trace, load_trace, trace_from_rows

__all__ = [
    "OracleResult",
    "RunMetrics",
    "SimConfig",
    "SimDevice",
    "SimResult",
    "Simulator",
    "Trace",
    "load_trace",
    "percentile",
    "ratio",
    "solve_oracle",
    "summarize",
    "trace_from_rows",
]
