"""Loading a llama.cpp model without touching the host process's stdout and stderr.

llama-cpp-python's `verbose=False` keeps its own messages quiet, but while it loads a model it
also points the *process's* file descriptors 1 and 2 at /dev/null (`suppress_stdout_stderr` in
its `_utils.py`). Whatever another thread or task of the host program printed meanwhile was
lost: 19 of 31 lines in one run. llama-cpp-python has no switch for the quiet without the
redirect, so the model is loaded with `verbose=False` and that redirect turned into a no-op for
the duration of the load. What the redirect was there to hide, llama.cpp's own log, goes
through llama.cpp's log callback into `logging` instead (logger ``langchain_disco.llama_cpp``,
DEBUG; llama.cpp's errors at ERROR).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import threading
from collections.abc import Iterator
from typing import Any

logger = logging.getLogger("langchain_disco.llama_cpp")

# `enum ggml_log_level` in llama.cpp's ggml.h. (llama-cpp-python's `_logger.py` still maps an
# older numbering, in which llama.cpp's warnings count as errors and its errors as debug.)
_GGML_LOG_LEVEL_ERROR = 4
_GGML_LOG_LEVEL_CONT = 5  # the rest of the previous message

_load_lock = threading.Lock()
_log_callback: Any = None  # the ctypes callback; llama.cpp keeps only a pointer to it
_last_level = logging.DEBUG


def load_llama(model_path: str, **kwargs: Any) -> Any:
    """`llama_cpp.Llama(model_path, verbose=False, **kwargs)`, leaving fds 1 and 2 alone."""
    from llama_cpp import Llama

    with _load_lock, _no_output_redirect():
        _route_llama_log_to_logging()
        return Llama(model_path=model_path, verbose=False, **kwargs)


def _route_llama_log_to_logging() -> None:
    """Install (once per process) the log callback that hands llama.cpp's log to `logging`.

    Process-wide, like llama.cpp's log itself: it replaces llama-cpp-python's callback, which
    printed to stderr.
    """
    global _log_callback
    if _log_callback is not None:
        return
    import llama_cpp

    @llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
    def forward(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        global _last_level
        if level != _GGML_LOG_LEVEL_CONT:
            _last_level = logging.ERROR if level == _GGML_LOG_LEVEL_ERROR else logging.DEBUG
        if logger.isEnabledFor(_last_level):
            message = text.decode("utf-8", errors="replace").rstrip("\n")
            if message:
                logger.log(_last_level, "%s", message)

    llama_cpp.llama_log_set(forward, ctypes.c_void_p(0))
    _log_callback = forward


@contextlib.contextmanager
def _no_output_redirect() -> Iterator[None]:
    """While the body runs, llama-cpp-python's fd-level stdout/stderr redirect does nothing.

    The redirect is looked up by name in the modules that load a model (`llama.py` for the
    backend, `_internals.py` for the weights); both names are restored afterwards, so only
    loads that run inside this block (ours, serialised by `_load_lock`) are affected.
    """
    import llama_cpp._internals
    import llama_cpp.llama

    name = "suppress_stdout_stderr"
    modules = [m for m in (llama_cpp.llama, llama_cpp._internals) if hasattr(m, name)]
    saved = [getattr(module, name) for module in modules]
    for module in modules:
        setattr(module, name, _leave_output_alone)
    try:
        yield
    finally:
        for module, original in zip(modules, saved, strict=True):
            setattr(module, name, original)


def _leave_output_alone(disable: bool = True) -> contextlib.nullcontext[None]:
    """Stands in for `suppress_stdout_stderr(disable=...)`: redirects nothing."""
    return contextlib.nullcontext()
