"""A profile cache is outside input: whatever a file holds, loading yields usable profiles.

Before issue 13 (item 4) a non-UTF-8 byte, deep nesting, `Infinity` in a count or `1e308` in a
float made every request fail, forever, or reached the math as is. Now unreadable or
implausible content logs one warning naming the file and the field and yields the priors;
fuzzed bytes and fuzzed mutations of a valid file never raise, and what loads plans finitely.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import math
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from langchain_disco.scheduling import (
    Budget,
    CostModel,
    DispatchContext,
    Profiles,
    ProfileStore,
    RequestFeatures,
    policy_from_name,
)
from langchain_disco.scheduling import store as store_module

STORE_LOGGER = "langchain_disco.scheduling.store"
FUZZ = settings(max_examples=200, deadline=None)


def _saved_by_the_store() -> str:
    """What `ProfileStore.save` writes for the priors: the valid file every case corrupts."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "profiles.json"
        ProfileStore(path).save(Profiles.prior())
        return path.read_text("utf-8")


VALID_TEXT = _saved_by_the_store()
VALID: dict[str, Any] = json.loads(VALID_TEXT)
PRIOR = Profiles.prior().to_dict()


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("profile-cache")


class _Literal(str):
    """Written into the file verbatim (`Infinity`, `1e400`), not as a JSON string."""


_SLOT = "@@literal@@"


def _with(path: tuple[str | int, ...], value: object) -> bytes:
    """The saved file with the field at `path` under `profiles` set to `value`."""
    doc = copy.deepcopy(VALID)
    node: Any = doc["profiles"]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = _SLOT if isinstance(value, _Literal) else value
    text = json.dumps(doc)
    if isinstance(value, _Literal):
        text = text.replace(f'"{_SLOT}"', value)
    return text.encode("utf-8")


def _without(path: tuple[str | int, ...]) -> bytes:
    doc = copy.deepcopy(VALID)
    node: Any = doc["profiles"]
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return json.dumps(doc).encode("utf-8")


@contextmanager
def _store_warnings() -> Iterator[list[str]]:
    """The store's warnings while the block runs (caplog is per test; hypothesis runs many)."""
    messages: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.WARNING:
                messages.append(record.getMessage())

    handler = Capture()
    logger = logging.getLogger(STORE_LOGGER)
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)


def _finite_numbers(node: object, where: str = "profiles") -> Iterator[tuple[str, float]]:
    pending: list[tuple[str, object]] = [(where, node)]
    while pending:
        path, value = pending.pop()
        if isinstance(value, dict):
            pending.extend((f"{path}.{k}", v) for k, v in value.items())
        elif isinstance(value, list):
            pending.extend((f"{path}[{i}]", v) for i, v in enumerate(value))
        elif isinstance(value, float):
            yield path, value


def _assert_usable(profiles: Profiles) -> None:
    """Every number finite; predictions, learning and a dispatch decision stay finite."""
    assert isinstance(profiles, Profiles)
    for path, value in _finite_numbers(profiles.to_dict()):
        assert math.isfinite(value), path
    device, server = profiles.device, profiles.server
    for prompt in (1, 500, 8000):
        assert 0 < device.predict_ttft_s(prompt, queue_wait_s=2.0) < math.inf
        assert math.isfinite(server.quantile(0.9, prompt))
        assert math.isfinite(server.expected_min_with(3.0, prompt))
    assert all(math.isfinite(r) for r in device.spread())
    assert math.isfinite(device.prefill_tok_s) and math.isfinite(device.decode_tok_s)
    assert math.isfinite(server.mean_ttft_s) and math.isfinite(server.decode_tok_s)
    for lengths in (profiles.output_lengths, profiles.prompt_lengths):
        assert math.isfinite(lengths.expected()) and math.isfinite(lengths.expected(256))
        assert math.isfinite(lengths.expected_remaining(10, 256))
    # The budgeted policy calibrates on every profile (prompt lengths included), once.
    policy = policy_from_name("generalized", Budget(share=0.5, resource="unified"))
    ctx = DispatchContext(profiles=profiles, cost_model=CostModel(usd_per_j=1e-5))
    for prompt in (1, 700, 12_000):
        plan = policy.plan(RequestFeatures(prompt_tokens=prompt, max_tokens=512), ctx)
        assert plan.starts and all(math.isfinite(s.at_s) for s in plan.starts)
        for estimate in plan.expected:
            assert math.isfinite(estimate.ttft_s), estimate
            cost = estimate.cost
            assert all(map(math.isfinite, (cost.server_usd, cost.device_j, cost.unified_usd)))
    # Learning on top of a loaded file stays finite too.
    device.observe(500, 1.5, 20.0)
    server.observe(0.4, 60.0, 500)
    server.observe_censored(2.0, 500)
    assert 0 < device.predict_ttft_s(500) < math.inf
    assert math.isfinite(server.mean_ttft_s)


def _load(cache_dir: Path, raw: bytes, name: str = "fuzzed.json") -> tuple[Profiles, list[str]]:
    path = cache_dir / name
    path.write_bytes(raw)
    with _store_warnings() as messages:
        profiles = ProfileStore(path).load()
    return profiles, messages


# -- the named cases: one warning naming the file and the field, then the priors -----------


DEEP = 10_000
_NAME_AT = VALID_TEXT.index('"name": "') + len('"name": "')
CORRUPT = [
    pytest.param(
        VALID_TEXT[:_NAME_AT].encode() + b"\xff" + VALID_TEXT[_NAME_AT:].encode(),
        "utf-8",
        id="a non-UTF-8 byte",
    ),
    pytest.param(
        b'{"version": 1, "profiles": ' + b"[" * DEEP + b"]" * DEEP + b"}",
        "nested too deeply",
        id="10,000-deep nesting of lists",
    ),
    pytest.param(
        b'{"version": 1, "profiles": ' + b'{"a": ' * DEEP + b"1" + b"}" * DEEP + b"}",
        "nested",
        id="10,000-deep nesting of objects",
    ),
    pytest.param(
        _with(("device", "n_ttft"), _Literal("Infinity")),
        "profiles.device.n_ttft",
        id="Infinity in a count",
    ),
    pytest.param(
        _with(("device", "n_ttft"), float("inf")),
        "profiles.device.n_ttft",
        id="infinity written by json.dumps",
    ),
    pytest.param(
        _with(("device", "theta", 0), 1e308), "profiles.device.theta[0]", id="1e308 in a float"
    ),
    pytest.param(
        _with(("device", "s_per_token"), 1e308),
        "profiles.device.s_per_token",
        id="1e308 as a time per token",
    ),
    pytest.param(
        _with(("device", "n_decode"), 1e308), "profiles.device.n_decode", id="1e308 in a count"
    ),
    pytest.param(
        _with(("server", "ttft", "seed"), _Literal("-Infinity")),
        "ttft.seed",
        id="-Infinity in a seed",
    ),
    pytest.param(
        _with(("server", "s_per_token"), _Literal("1e400")),
        "server.s_per_token",
        id="a float literal that overflows",
    ),
    pytest.param(
        _with(("device", "moments", "cxx"), _Literal("NaN")),
        "profiles.device.moments.cxx",
        id="NaN in the fit's moments",
    ),
    pytest.param(
        _with(("server", "ttft", "samples", 3), float("nan")),
        "ttft.samples[3]",
        id="NaN in a sample",
    ),
    pytest.param(_with(("device", "n_ttft"), -1), "profiles.device.n_ttft", id="a negative count"),
    pytest.param(
        _with(("output_lengths", "capacity"), -3),
        "profiles.output_lengths.capacity",
        id="a negative capacity",
    ),
    pytest.param(
        _with(("prompt_lengths", "n_seen"), -10),
        "profiles.prompt_lengths.n_seen",
        id="a negative n_seen",
    ),
    pytest.param(
        _with(("server", "ttft", "samples", 0), -0.5),
        "server.ttft.samples[0]",
        id="a negative TTFT sample",
    ),
    pytest.param(
        _with(("device", "n_ttft"), True), "profiles.device.n_ttft", id="a bool for a count"
    ),
    pytest.param(
        _with(("device", "n_ttft"), "12"), "profiles.device.n_ttft", id="a string for a count"
    ),
    pytest.param(
        _with(("device", "n_ttft"), 12.0), "profiles.device.n_ttft", id="a float for a count"
    ),
    pytest.param(
        _with(("device", "theta"), {"a": 1}), "profiles.device.theta", id="an object for a list"
    ),
    pytest.param(
        _with(("device", "theta"), [1.0]), "profiles.device.theta", id="a list of the wrong length"
    ),
    pytest.param(_with(("device", "name"), ["x"]), "profiles.device.name", id="a list for a name"),
    pytest.param(
        _with(("device", "name"), _Literal('"\\ud800"')),
        "profiles.device.name",
        id="a lone surrogate in a name",
    ),
    pytest.param(
        _with(("prompt_lengths", "samples"), "123"),
        "prompt_lengths.samples",
        id="a string for the samples",
    ),
    pytest.param(
        _with(("output_lengths", "samples"), []), "output_lengths.samples", id="no samples"
    ),
    pytest.param(
        _with(("output_lengths", "samples"), [1.0] * 513),
        "output_lengths.samples",
        id="more samples than the capacity",
    ),
    pytest.param(
        _with(("device", "moments", "cxx"), -5.0),
        "profiles.device.moments.cxx",
        id="a negative sum of squares",
    ),
    pytest.param(
        _with(("device", "forgetting"), 0.0),
        "profiles.device.forgetting",
        id="a forgetting factor of 0",
    ),
    pytest.param(
        _with(("device", "ref_s"), 1e9), "profiles.device.ref_s", id="a reference TTFT of 30 years"
    ),
    pytest.param(
        _with(("server", "bucket_edges"), [2048, 512]),
        "server.bucket_edges",
        id="descending bucket edges",
    ),
    pytest.param(
        _with(("server", "buckets"), []),
        "profiles.server.buckets",
        id="buckets that do not match the edges",
    ),
    pytest.param(_with(("server",), None), "profiles.server", id="null for a profile"),
    pytest.param(
        _without(("device", "theta")), "profiles.device.theta is missing", id="a missing field"
    ),
    pytest.param(
        json.dumps({"version": True, "profiles": VALID["profiles"]}).encode(),
        "version True",
        id="true for the version",
    ),
    pytest.param(
        json.dumps([1, 2, 3]).encode(), "format version None", id="a list for the document"
    ),
    pytest.param(b"", "corrupt", id="an empty file"),
]


@pytest.mark.parametrize(("raw", "reason"), CORRUPT)
def test_each_corrupt_case_loads_the_priors_with_one_warning_naming_file_and_field(
    cache_dir: Path, caplog: pytest.LogCaptureFixture, raw: bytes, reason: str
) -> None:
    path = cache_dir / "corrupt.json"
    path.write_bytes(raw)
    with caplog.at_level(logging.WARNING, logger=STORE_LOGGER):
        profiles = ProfileStore(path).load()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    message = warnings[0].getMessage()
    assert str(path) in message and reason in message and message.endswith("using priors")
    assert profiles.to_dict() == PRIOR


def test_the_valid_file_loads_without_a_warning_and_plans_finitely(cache_dir: Path) -> None:
    profiles, messages = _load(cache_dir, VALID_TEXT.encode())
    assert messages == []
    assert profiles.to_dict() == PRIOR
    _assert_usable(profiles)


def test_a_file_larger_than_any_profile_cache_is_not_read_whole(
    cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "MAX_FILE_BYTES", 1000)
    profiles, messages = _load(cache_dir, VALID_TEXT.encode())
    assert len(messages) == 1 and "larger than 1000 bytes" in messages[0]
    assert profiles.to_dict() == PRIOR


def test_a_diverged_device_fit_is_refused_not_planned_on(cache_dir: Path) -> None:
    """What an unstable fit saves (a line of 1e95 s, a covariance no longer one) is rejected."""
    diverged = copy.deepcopy(VALID)
    diverged["profiles"]["device"]["theta"] = [3.3e95, 2.6e96]
    diverged["profiles"]["device"]["cov"] = [[-1.2e186, -9.2e186], [-9.2e186, -7.3e187]]
    profiles, messages = _load(cache_dir, json.dumps(diverged).encode())
    assert len(messages) == 1 and "profiles.device.theta[0]" in messages[0]
    assert profiles.to_dict() == PRIOR


# -- fuzzing: arbitrary bytes, and structured mutations of a valid file ---------------------


def _check(cache_dir: Path, raw: bytes) -> None:
    """Loading never raises; a warning means the priors (usable: the named cases show it);
    what loads without one is usable, and saves and reloads as it is."""
    profiles, messages = _load(cache_dir, raw)
    assert len(messages) <= 1, messages
    event("priors" if messages else "loaded")
    if messages:
        assert profiles.to_dict() == PRIOR
        return
    resaved = cache_dir / "resaved.json"
    ProfileStore(resaved).save(profiles)
    again, more = _load(cache_dir, resaved.read_bytes(), "reloaded.json")
    assert more == [] and again.to_dict() == profiles.to_dict()
    _assert_usable(profiles)


@st.composite
def _spliced(draw: st.DrawFn, text: str) -> bytes:
    """The valid file with a random byte range replaced by random bytes (or cut short)."""
    raw = text.encode("utf-8")
    start = draw(st.integers(0, len(raw)))
    end = draw(st.integers(start, min(len(raw), start + 64)))
    return raw[:start] + draw(st.binary(max_size=16)) + raw[end:]


@FUZZ
@given(data=st.data())
def test_arbitrary_bytes_load_as_usable_profiles(cache_dir: Path, data: st.DataObject) -> None:
    raw = data.draw(st.one_of(st.binary(max_size=512), _spliced(VALID_TEXT)), label="raw")
    _check(cache_dir, raw)


NASTY_NUMBERS: list[object] = [
    -1,
    -0.0,
    5e-324,
    1e308,
    -1e308,
    2**53 + 1,
    2**64,
    10**300,
    float("inf"),
    float("-inf"),
    float("nan"),
    True,
]
NASTY: list[object] = [*NASTY_NUMBERS, False, None, "", "1", [], {}]
json_values = st.recursive(
    st.one_of(
        st.sampled_from(NASTY),
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.text(max_size=8),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=6,
)


def _paths(node: object, path: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    """Every node's path; of a long list only the first, second and last items (samples would
    otherwise crowd out every other field)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*path, key)
            yield from _paths(value, (*path, key))
    elif isinstance(node, list):
        for index in sorted({0, 1, len(node) - 1} & set(range(len(node)))):
            yield (*path, index)
            yield from _paths(node[index], (*path, index))


# Plausible numbers and the edges of what the loader accepts: many load, so the math runs.
floats = st.one_of(
    st.floats(0, 1e6),
    st.sampled_from([0.0, 5e-324, 1e-9, 1e-3, 0.5, 1.0, 100.0, 86_400.0, 1e9, 1e150, -1e150]),
)
integers = st.one_of(
    st.integers(0, 10**6), st.sampled_from([0, 1, 2, 1000, 10**6, 2**53, 2**63, -1])
)
numbers = st.one_of(floats, integers, st.sampled_from(NASTY_NUMBERS))


def _is_number(doc: Any, path: tuple[str | int, ...]) -> bool:
    node = functools.reduce(lambda n, k: n[k], path, doc)
    return isinstance(node, (int, float)) and not isinstance(node, bool)


def _mutate(doc: Any, data: st.DataObject) -> Any:
    """One random edit: replace a node with a random JSON value or a number with another,
    delete a node, or wrap it in lists (the root may only be wrapped)."""
    paths = list(_paths(doc))
    edit = data.draw(st.sampled_from(["replace", "number", "delete", "wrap"]), label="edit")
    if edit == "number":
        paths = [p for p in paths if _is_number(doc, p)]
    if not paths or (edit == "wrap" and data.draw(st.booleans(), label="wrap the root")):
        depth = data.draw(st.integers(1, 3), label="depth")
        return functools.reduce(lambda node, _: [node], range(depth), doc)
    path = data.draw(st.sampled_from(paths), label="path")
    parent: Any = functools.reduce(lambda n, k: n[k], path[:-1], doc)
    key = path[-1]
    if edit == "replace":
        parent[key] = data.draw(json_values, label="value")
    elif edit == "number":
        parent[key] = data.draw(numbers, label="number")
    elif edit == "delete":
        del parent[key]
    else:
        depth = data.draw(st.integers(1, 3), label="depth")
        parent[key] = functools.reduce(lambda node, _: [node], range(depth), parent[key])
    return doc


@FUZZ
@given(data=st.data())
def test_mutations_of_a_valid_file_load_as_priors_or_as_finite_usable_profiles(
    cache_dir: Path, data: st.DataObject
) -> None:
    doc: Any = copy.deepcopy(VALID)
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        doc = _mutate(doc, data)
    _check(cache_dir, json.dumps(doc).encode("utf-8"))


@FUZZ
@given(data=st.data())
def test_numbers_the_loader_accepts_keep_every_estimate_finite(
    cache_dir: Path, data: st.DataObject
) -> None:
    """Numbers only, of each field's type, most of them plausible: whatever of them the loader
    accepts is safe for the math."""
    doc: Any = copy.deepcopy(VALID)
    paths = [p for p in _paths(doc) if _is_number(doc, p)]
    for path in data.draw(st.lists(st.sampled_from(paths), min_size=1, max_size=3), label="at"):
        parent: Any = functools.reduce(lambda n, k: n[k], path[:-1], doc)
        kind = integers if isinstance(parent[path[-1]], int) else floats
        parent[path[-1]] = data.draw(kind, label="number")
    _check(cache_dir, json.dumps(doc).encode("utf-8"))
