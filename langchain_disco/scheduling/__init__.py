"""Pure decision logic: cost model, profiles, budgets and dispatch policies. No clocks, no asyncio.

The same objects drive the live engine and the trace-replay simulator (`langchain_disco.sim`),
so what the simulator shows is what the code does.
"""

from langchain_disco.scheduling.budget import Budget, BudgetController, Resource
from langchain_disco.scheduling.cost import Cost, CostModel
from langchain_disco.scheduling.dispatch import (
    ActionEstimate,
    DispatchContext,
    DispatchPolicy,
    EndpointOutcome,
    LocalOnly,
    Plan,
    Race,
    RemoteOnly,
    RequestFeatures,
    RequestOutcome,
    Start,
    policy_for_mode,
)
from langchain_disco.scheduling.estimates import DeviceJob, predict_queue_wait_s
from langchain_disco.scheduling.policies import (
    POLICY_NAMES,
    Generalized,
    LengthThreshold,
    RandomSplit,
    WaitTime,
    policy_from_name,
)
from langchain_disco.scheduling.profiles import (
    DeviceProfile,
    LengthProfile,
    OutputLengthProfile,
    Profiles,
    ServerProfile,
)
from langchain_disco.scheduling.roles import Role
from langchain_disco.scheduling.server_cache import HitRates, PrefixMatch, ServerPrefixCache
from langchain_disco.scheduling.store import ProfileStore

__all__ = [
    "POLICY_NAMES",
    "ActionEstimate",
    "Budget",
    "BudgetController",
    "Cost",
    "CostModel",
    "DeviceJob",
    "DeviceProfile",
    "DispatchContext",
    "DispatchPolicy",
    "EndpointOutcome",
    "Generalized",
    "HitRates",
    "LengthProfile",
    "LengthThreshold",
    "LocalOnly",
    "OutputLengthProfile",
    "Plan",
    "PrefixMatch",
    "ProfileStore",
    "Profiles",
    "Race",
    "RandomSplit",
    "RemoteOnly",
    "RequestFeatures",
    "RequestOutcome",
    "Resource",
    "Role",
    "ServerPrefixCache",
    "ServerProfile",
    "Start",
    "WaitTime",
    "policy_for_mode",
    "policy_from_name",
    "predict_queue_wait_s",
]
