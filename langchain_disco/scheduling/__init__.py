"""Pure decision logic: the cost model and dispatch policies. No I/O, no clocks, no asyncio.

The same objects drive the live engine and (later) the trace-replay simulator, so what the
simulator shows is what the code does.
"""

from langchain_disco.scheduling.cost import Cost, CostModel
from langchain_disco.scheduling.dispatch import (
    DispatchPolicy,
    LocalOnly,
    Plan,
    Race,
    RemoteOnly,
    RequestFeatures,
    Start,
    policy_for_mode,
)

__all__ = [
    "Cost",
    "CostModel",
    "DispatchPolicy",
    "LocalOnly",
    "Plan",
    "Race",
    "RemoteOnly",
    "RequestFeatures",
    "Start",
    "policy_for_mode",
]
