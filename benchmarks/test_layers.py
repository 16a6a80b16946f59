"""pytest-benchmark microbenchmarks of the per-token path, one per layer (issue 19, item 2).

    make microbench     # .venv/bin/python -m pytest benchmarks/test_layers.py --benchmark-only

Each benchmark drains one 64-token answer of the echo endpoint through one layer of
`langchain_disco.bench._layers` (the endpoint alone, the engine, `_chunks`, `_astream`, the
public `astream`), in one process and without HTTP; the difference between two adjacent layers
is that layer's cost per answer. Compare two commits with pytest-benchmark's own tools
(``--benchmark-autosave``, then ``pytest-benchmark compare``). Not collected by `make test`
(testpaths is ``tests``): timing targets live in benchmarks, not in the suite.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from langchain_disco.bench._layers import LAYERS, Layers


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def layers() -> Layers:
    return Layers(tokens=64)


@pytest.mark.parametrize("layer", LAYERS)
def test_layer(benchmark: Any, loop: asyncio.AbstractEventLoop, layers: Layers, layer: str) -> None:
    expected = loop.run_until_complete(layers.stream("endpoint"))
    benchmark.extra_info["tokens"] = layers.tokens
    text = benchmark.pedantic(
        lambda: loop.run_until_complete(layers.stream(layer)),
        rounds=300,
        warmup_rounds=10,
    )
    assert text == expected
