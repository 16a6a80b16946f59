"""The per-layer benchmark's layers (`bench._layers`) and its script (benchmarks/bench_layers.py):
every layer streams the same answer, the memory measurement sees what LangChain keeps per
chunk, and the script writes its section and the profile's flame graph."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from pathlib import Path

import pytest

from langchain_disco.bench._layers import (
    LAYERS,
    Layers,
    cpu_per_token,
    held_per_chunk,
    memory_per_stream,
)

ROOT = Path(__file__).resolve().parents[2]


def test_every_layer_streams_the_endpoints_answer() -> None:
    layers = Layers(tokens=16)

    async def texts() -> dict[str, str]:
        return {name: await layers.stream(name) for name in LAYERS}

    got = asyncio.run(texts())
    assert len(got["endpoint"].split()) == 16
    assert got == dict.fromkeys(LAYERS, got["endpoint"])


def test_an_unknown_layer_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="choose from endpoint, engine"):
        Layers().stream("http")


def test_memory_per_stream_sees_the_chunks_langchain_keeps_until_the_end() -> None:
    layers = Layers(tokens=32)
    endpoint = memory_per_stream(layers, "endpoint", streams=20)
    public = memory_per_stream(layers, "astream", streams=20)
    assert endpoint > 0
    # LangChain's astream keeps every chunk for on_llm_end: over 31 chunks, kilobytes more.
    assert public - endpoint > 31 * 500


def test_our_layers_keep_under_100_bytes_per_delivered_chunk() -> None:
    # Measured 2026-12-06: the engine and the model keep ~40 B per chunk (the gap between
    # tokens the report keeps, the answer's text); keeping each delivery or chunk would be
    # hundreds of bytes. LangChain's own list of chunks (astream) is not ours to bound.
    ours = held_per_chunk("astream_private", streams=20) - held_per_chunk("endpoint", streams=20)
    assert ours < 100


def test_cpu_per_token_is_positive_and_finite() -> None:
    value = cpu_per_token(Layers(tokens=8), "engine", requests=5, rounds=1)
    assert 0 < value < 1


def test_the_script_writes_its_section_and_the_flame_graph(tmp_path: Path) -> None:
    pytest.importorskip("pyinstrument")
    spec = importlib.util.spec_from_file_location(
        "bench_layers", ROOT / "benchmarks/bench_layers.py"
    )
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    page = tmp_path / "overhead.md"
    page.write_text("# Overhead\n\n## Results\n\nkept\n", encoding="utf-8")
    script.PAGE = page
    out = tmp_path / "out"
    argv = ["--tokens", "8", "--requests", "3", "--rounds", "1", "--streams", "3"]
    assert script.main([*argv, "--profile-requests", "30", "--out", str(out)]) == 0
    text = page.read_text("utf-8")
    assert "## Results\n\nkept" in text
    section = text.split("## Per layer", 1)[1]
    for name in LAYERS:
        assert f"| {name} |" in section
    assert "| langchain-disco |" in section
    flame = json.loads((out / "astream.speedscope.json").read_text("utf-8"))
    assert flame["profiles"]
    assert (out / "astream.html").stat().st_size > 0
