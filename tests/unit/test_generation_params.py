"""Per-call sampling parameters are checked before anything is generated (issue 13, item 6)."""

from __future__ import annotations

import pytest

from langchain_disco import DiscoChatModel
from langchain_disco.endpoints.base import GenerationParams
from langchain_disco.errors import ConfigError


@pytest.mark.parametrize("bad", [0, -1, -512, True, 2.5])
def test_a_max_tokens_below_one_or_not_a_whole_number_is_refused(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"max_tokens=.* must be a whole number of tokens"):
        GenerationParams(max_tokens=bad)  # type: ignore[arg-type]


def test_unset_and_positive_max_tokens_are_accepted() -> None:
    assert GenerationParams().max_tokens is None
    assert GenerationParams(max_tokens=1).max_tokens == 1


@pytest.mark.parametrize("bad", [0, -5])
async def test_a_per_call_max_tokens_of_zero_fails_before_any_request(bad: int) -> None:
    # Port 9 (discard) is closed: a request sent there would fail as a connection error.
    model = DiscoChatModel(mode="remote", remote_base_url="http://127.0.0.1:9/v1", failover=False)
    with pytest.raises(ConfigError, match="max_tokens"):
        await model.ainvoke("hello", max_tokens=bad)
