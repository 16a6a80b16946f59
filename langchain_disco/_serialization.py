"""`DiscoChatModel` in LangChain's serialization (`dumpd`, `dumps`, `loads`).

A model is saved as its configuration: every `DiscoSettings` field, as the constructor keyword
it is (``mode=``, ``remote_base_url=``, ...), next to the model's own fields, which LangChain's
`Serializable.to_json` collects. Every setting, not only those that differ from the defaults:
the constructor reads ``DISCO_*`` variables for what it is not given, so a default left out
would be replaced by whatever the loading process's environment says (``DISCO_MODE=remote``
turned a saved race into a remote-only model). The API key alone is left to the loader: it is
saved as a secret reference (``DISCO_REMOTE_API_KEY``), never its value, which `loads`
resolves from its ``secrets_map`` (or, with ``secrets_from_env=True``, the environment).

Endpoints and dispatch policies passed as objects (``local=``, ``remote=``, ``policy=``) are
code, not configuration. Such a model serializes as LangChain's "not implemented" marker, as
any component that cannot be saved does, rather than raising: LangChain's callbacks serialize
every model they trace (`BaseChatModel._serialized`), so an error would break each call of
that model, while `loads` of the marker raises a clear ``NotImplementedError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from langchain_core.load.serializable import SerializedConstructor, SerializedNotImplemented

from langchain_disco.config import env_var

if TYPE_CHECKING:
    from langchain_disco.chat_models import DiscoChatModel

SECRET_ID = env_var("remote_api_key")
"""The secret id of the API key: its environment variable, ``DISCO_REMOTE_API_KEY``."""
SECRET_FIELDS = {"remote_api_key": SECRET_ID, "state_url": env_var("state_url")}
"""Every secret setting and its secret id (its environment variable): the store URL may hold
a password too."""

OBJECT_FIELDS = ("local", "remote", "dispatch_policy")
"""The fields that hold objects; saved, they are rebuilt from the settings."""

# Sampling defaults are fields of the model too, which a call reads: saved from there. (One
# left unset, None, is "not given" to the constructor, so the loader's DISCO_* may set it.)
_MODEL_FIELDS = ("temperature", "max_tokens", "seed")


def objects_given(values: Any) -> frozenset[str]:
    """The endpoints and policy that constructor arguments `values` pass as objects."""
    if not isinstance(values, Mapping):
        return frozenset()
    given = {name for name in OBJECT_FIELDS if values.get(name) is not None}
    if values.get("policy") is not None and not isinstance(values["policy"], str):
        given.add("dispatch_policy")  # `policy=` takes a name or a policy object
    return frozenset(given)


def settings_kwargs(model: DiscoChatModel) -> dict[str, Any]:
    """Every setting of `model` as a JSON value, the sampling defaults from its fields, and the
    secrets as `SecretStr`s (which `Serializable.to_json` replaces by their secret references)."""
    settings = model.settings
    kwargs: dict[str, Any] = settings.model_dump(mode="json", exclude=set(SECRET_FIELDS))
    kwargs.update({name: getattr(model, name) for name in _MODEL_FIELDS})
    for name in SECRET_FIELDS:
        if getattr(settings, name) is not None:
            kwargs[name] = getattr(settings, name)
    return kwargs


def without_objects(
    serialized: SerializedConstructor | SerializedNotImplemented,
) -> SerializedConstructor | SerializedNotImplemented:
    """`Serializable.to_json`'s output with the settings object and the endpoints left out (the
    flattened settings stand for them), and without the package versions LangChain puts in
    ``metadata`` (not configuration: the loading process records its own)."""
    if serialized["type"] != "constructor":
        return serialized
    kwargs = serialized["kwargs"]  # type: ignore[typeddict-item]
    for name in ("settings", *OBJECT_FIELDS):
        kwargs.pop(name, None)
    metadata = kwargs.get("metadata")
    if isinstance(metadata, dict) and "lc_versions" in metadata:
        rest = {k: v for k, v in metadata.items() if k != "lc_versions"}
        if rest:
            kwargs["metadata"] = rest
        else:
            del kwargs["metadata"]
    return serialized
