"""The continuation contract on any server's output: echo stripped, restart refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from langchain_disco.endpoints._continuation import RESTART_MATCH_CHARS, PrefixFilter
from langchain_disco.errors import ContinuationRestartError, EndpointError


def _run(
    prefix: str, deltas: list[str], expect_echo: bool | None = None
) -> tuple[str, PrefixFilter]:
    f = PrefixFilter(prefix, expect_echo=expect_echo)
    out = "".join(f.feed(d) for d in deltas) + f.end()
    return out, f


def _split(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts})
    pieces, last = [], 0
    for p in [*points, len(text)]:
        pieces.append(text[last:p])
        last = p
    return pieces


def test_llama_server_echo_merged_into_the_first_delta_is_stripped() -> None:
    # Observed against llama-server: prefix "The moon is a", first delta "The moon is a very".
    out, f = _run("The moon is a", ["The moon is a very", " bright", " object."])
    assert out == " very bright object."
    assert f.echoed is True


def test_an_echo_split_across_deltas_is_held_then_stripped() -> None:
    f = PrefixFilter("The moon is a")
    assert f.feed("The ") == ""
    assert f.feed("moon is") == ""
    assert f.feed(" a very") == " very"
    assert f.feed(" big") == " big"
    assert f.end() == ""


def test_a_continuation_without_echo_passes_through_unchanged() -> None:
    out, f = _run("The moon is a", [" very", " bright", " object."])
    assert out == " very bright object."
    assert f.echoed is False


def test_an_echo_of_the_trimmed_prefix_drops_the_whitespace_the_reader_already_has() -> None:
    # Chat templates trim message content: the model saw "The moon is a" and writes " very".
    out, _ = _run("The moon is a ", ["The moon is a", " very", " bright"])
    assert out == "very bright"


def test_a_restart_that_departs_from_the_prefix_is_refused_before_delivery() -> None:
    f = PrefixFilter("The moon is a rocky body")
    assert f.feed("The moon is") == ""
    with pytest.raises(ContinuationRestartError, match="restarted") as info:
        f.feed(" Earth's only natural satellite.")
    assert isinstance(info.value, EndpointError)


def test_a_restart_that_ends_inside_the_prefix_is_refused() -> None:
    f = PrefixFilter("The moon is a rocky body")
    f.feed("The moon is")
    with pytest.raises(ContinuationRestartError):
        f.end()


def test_a_known_echoing_server_that_stops_inside_its_echo_failed_to_continue() -> None:
    f = PrefixFilter("The moon", expect_echo=True)
    assert f.feed("The") == ""
    with pytest.raises(ContinuationRestartError, match="inside the echo"):
        f.end()


def test_a_short_coincidence_on_a_server_known_not_to_echo_is_delivered() -> None:
    out, f = _run("ha", ["ha", " ha"], expect_echo=False)
    assert out == "ha ha"
    assert f.echoed is False


def test_an_empty_prefix_passes_everything() -> None:
    out, _ = _run("", ["Hello", " world"])
    assert out == "Hello world"


_words = st.text(alphabet="abcdefgh .,\n", min_size=1, max_size=40)


@given(
    prefix=st.text(alphabet="abcdefgh .,", min_size=RESTART_MATCH_CHARS, max_size=60).filter(
        lambda p: p.strip() == p
    ),
    rest=_words,
    cuts=st.lists(st.integers(0, 200), max_size=6),
)
def test_any_echo_split_anywhere_delivers_exactly_the_continuation(
    prefix: str, rest: str, cuts: list[int]
) -> None:
    out, _ = _run(prefix, _split(prefix + rest, cuts))
    assert out == rest


@given(
    prefix=st.text(alphabet="ABCDEFGH", min_size=1, max_size=60),
    rest=_words,
    cuts=st.lists(st.integers(0, 200), max_size=6),
)
def test_any_continuation_that_does_not_repeat_the_prefix_is_delivered_exactly(
    prefix: str, rest: str, cuts: list[int]
) -> None:
    # The alphabets are disjoint: the continuation cannot be read as an echo.
    for expect in (None, False, True):
        out, _ = _run(prefix, _split(rest, cuts), expect_echo=expect)
        assert out == rest


@given(
    prefix=st.text(alphabet="abc", min_size=RESTART_MATCH_CHARS + 4, max_size=40),
    keep=st.integers(RESTART_MATCH_CHARS, RESTART_MATCH_CHARS + 3),
    tail=st.text(alphabet="XYZ", min_size=1, max_size=10),
)
def test_any_restart_repeating_enough_of_the_prefix_is_refused(
    prefix: str, keep: int, tail: str
) -> None:
    f = PrefixFilter(prefix)
    with pytest.raises(ContinuationRestartError):
        f.feed(prefix[:keep] + tail)
        f.end()


def test_a_server_known_not_to_echo_may_repeat_the_prefix_and_it_is_delivered() -> None:
    # A looping model continues "X\n" with "X\n": with a server documented or probed not to
    # echo, that is the continuation, delivered whole.
    out, f = _run("Name three colors.\n", ["Name", " three", " colors", ".\n"], expect_echo=False)
    assert out == "Name three colors.\n" and f.echoed is False


def test_with_an_unknown_echo_a_verbatim_repeat_of_the_whole_prefix_reads_as_an_echo() -> None:
    # The one ambiguity of an unknown server: text equal to the whole prefix is taken for its
    # echo (llama-server's current behaviour), so a looping model's repeat is not delivered;
    # `auto` measures the server instead (docs/servers.md).
    out, f = _run("Name three colors.\n", ["Name", " three", " colors", ".\n", "More"])
    assert out == "More" and f.echoed is True
