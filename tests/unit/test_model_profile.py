"""`DiscoChatModel.profile`: only what holds whichever endpoint serves (no model is loaded)."""

from __future__ import annotations

from langchain_core.language_models import ModelProfile

from langchain_disco import DiscoChatModel, LlamaCppEndpoint

URL = "http://127.0.0.1:9/v1"
NOT_READ_LOCALLY = (
    "image_inputs",
    "image_url_inputs",
    "pdf_inputs",
    "audio_inputs",
    "video_inputs",
    "image_tool_message",
    "pdf_tool_message",
)


def test_a_local_only_model_has_its_context_window_and_reads_text_only() -> None:
    model = DiscoChatModel(mode="local", local_n_ctx=2048, failover=False)
    profile = model.profile
    assert profile is not None
    assert profile["max_input_tokens"] == 2048
    assert profile["max_output_tokens"] == 2048
    assert all(profile[f] is False for f in NOT_READ_LOCALLY)  # type: ignore[literal-required]
    assert profile["text_inputs"] and profile["text_outputs"]
    assert profile["structured_output"] is True
    # A tool call can be forced (grammar), but the small model does not choose one itself.
    assert profile["tool_choice"] is True
    assert profile["tool_calling"] is False


def test_the_rule_based_local_tool_choice_makes_tool_calling_true() -> None:
    model = DiscoChatModel(
        mode="local", local_rule_based_tool_choice=True, failover=False, local_n_ctx=512
    )
    assert model.profile is not None
    assert model.profile["tool_calling"] is True
    assert model.profile["tool_call_streaming"] is True


def test_a_remote_may_serve_so_no_context_window_is_invented() -> None:
    model = DiscoChatModel(mode="race", remote_base_url=URL)
    profile = model.profile
    assert profile is not None
    assert "max_input_tokens" not in profile and "max_output_tokens" not in profile
    assert profile["tool_calling"] is True  # tool_choice='auto' goes to the remote
    assert profile["structured_output"] is True
    # The local model may serve (race, failover), and it reads no images.
    assert profile["image_inputs"] is False


def test_a_remote_only_model_claims_nothing_about_inputs_it_cannot_know() -> None:
    model = DiscoChatModel(mode="remote", remote_base_url=URL, failover=False)
    profile = model.profile
    assert profile is not None
    assert model.local is None
    assert not set(NOT_READ_LOCALLY) & set(profile)
    assert "max_input_tokens" not in profile
    assert profile["tool_calling"] and profile["tool_choice"] and profile["structured_output"]


def test_an_endpoint_passed_as_an_object_is_described_too() -> None:
    model = DiscoChatModel(mode="local", local=LlamaCppEndpoint(None, n_ctx=777))
    assert model.profile is not None
    assert model.profile["max_input_tokens"] == 777


def test_a_profile_given_by_the_caller_is_kept() -> None:
    given = ModelProfile(max_input_tokens=128_000)
    model = DiscoChatModel(mode="race", remote_base_url=URL, profile=given)
    assert model.profile == given
