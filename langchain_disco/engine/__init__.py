"""The engine: one sans-I/O per-request core (`core`) and the asyncio driver that runs it live
(`driver`). The simulator drives the same core on a virtual clock (`langchain_disco.sim`)."""

from langchain_disco.engine.commands import (
    CancelStream,
    Command,
    Delivery,
    EngineEvent,
    Purpose,
    StartStream,
)
from langchain_disco.engine.core import RequestCore
from langchain_disco.engine.driver import Clock, Engine, EngineRun
from langchain_disco.engine.options import (
    EndpointInfo,
    EngineOptions,
    StaticPredictor,
)

__all__ = [
    "CancelStream",
    "Clock",
    "Command",
    "Delivery",
    "EndpointInfo",
    "Engine",
    "EngineEvent",
    "EngineOptions",
    "EngineRun",
    "Purpose",
    "RequestCore",
    "StartStream",
    "StaticPredictor",
]
