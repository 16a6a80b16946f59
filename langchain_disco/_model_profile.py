"""`DiscoChatModel.profile`: LangChain's `ModelProfile` (its capabilities, not the latency profiles
of `scheduling/profiles.py`), from what we know of the endpoints.

Honest by construction: a field is set only when it holds for every request, whichever
endpoint serves it, and is left out when we do not know (a remote's context window is not
something an OpenAI-compatible API tells us). Two kinds of fields:

- what a request may *need* (tool calling, forcing a tool, structured output): a request that
  needs it is sent only to endpoints that can serve it (`_within_capabilities`), so the model
  has it when some endpoint has it;
- what every endpoint *does* with any request (its context window, whether it reads images):
  any endpoint may serve (the policy's choice, a race, a failover), so all must agree. The
  local llama.cpp model reads text only, so a model that may use it takes no images, audio,
  video or PDFs; its context window (``DISCO_LOCAL_N_CTX``) is the model's only when no
  remote, of unknown window, may serve.
"""

from __future__ import annotations

from collections.abc import Sequence

from langchain_core.language_models import ModelProfile

from langchain_disco.endpoints.base import Endpoint
from langchain_disco.endpoints.llama_cpp import LlamaCppEndpoint


def model_profile(endpoints: Sequence[Endpoint]) -> ModelProfile | None:
    """The profile of a model served by `endpoints` (None without any)."""
    if not endpoints:
        return None
    caps = [e.capabilities for e in endpoints]
    profile = ModelProfile(
        text_inputs=True,
        text_outputs=True,
        temperature=True,
        # Calling a tool when the model decides to (a plain `bind_tools`, an agent's loop).
        tool_calling=any(c.tool_choice_auto for c in caps),
        # Forcing one (`tool_choice`): both endpoints can, the local one by a grammar.
        tool_choice=any(c.tools for c in caps),
        structured_output=any(c.structured_output for c in caps),
    )
    if profile["tool_calling"]:
        profile["tool_call_streaming"] = True  # calls arrive as `tool_call_chunks`
    if any(isinstance(e, LlamaCppEndpoint) for e in endpoints):
        profile.update(
            ModelProfile(
                image_inputs=False,
                image_url_inputs=False,
                pdf_inputs=False,
                audio_inputs=False,
                video_inputs=False,
                image_tool_message=False,
                pdf_tool_message=False,
            )
        )
    windows = [e.n_ctx if isinstance(e, LlamaCppEndpoint) else None for e in endpoints]
    known = [w for w in windows if w is not None]
    if known and len(known) == len(windows):
        # The prompt and the answer share the window: neither can be longer than it.
        profile["max_input_tokens"] = min(known)
        profile["max_output_tokens"] = min(known)
    return profile
