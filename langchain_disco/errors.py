"""The exceptions langchain-disco raises, as one small tree.

```
DiscoError                      base of everything we raise
├── ConfigError                 invalid configuration; names the setting and the fix
└── EndpointError               an endpoint failed (carries the endpoint name)
    ├── EndpointTimeoutError    connect, first-token or idle timeout
    ├── ContinuationUnsupportedError
    │                           asked to continue a partial answer it cannot continue
    ├── ContinuationRestartError
    │                           asked to continue, it answered from the beginning again
    └── AllEndpointsFailedError every endpoint that was tried failed (chains the causes)
```

Messages never contain secrets: API keys are `SecretStr` everywhere and endpoint errors are
built from status codes and our own text, not from request headers.
"""

from __future__ import annotations

from collections.abc import Sequence


class DiscoError(Exception):
    """Base class of every exception raised by langchain-disco."""


class ConfigError(DiscoError):
    """Invalid configuration; the message names the setting, its `DISCO_*` variable and the fix.

    Deliberately not a `ValueError`: pydantic would wrap a `ValueError` raised during model
    validation into a `ValidationError` and bury our message; this one reaches the user as is.
    """


class EndpointError(DiscoError):
    """An endpoint failed to produce (or finish) its stream."""

    def __init__(self, endpoint: str, message: str) -> None:
        super().__init__(f"endpoint {endpoint!r}: {message}")
        self.endpoint = endpoint


class EndpointTimeoutError(EndpointError):
    """An endpoint exceeded its connect, first-token or idle timeout."""


class ContinuationUnsupportedError(EndpointError):
    """The endpoint was asked to continue a partial assistant answer but cannot do it exactly."""


class ContinuationRestartError(EndpointError):
    """Asked to continue a partial answer, the server answered from the beginning instead.

    Raised before any of that answer is delivered: a failed continuation, which the engine
    fails over from like any other endpoint error.
    """


class AllEndpointsFailedError(EndpointError):
    """Every endpoint the plan started failed; `errors` holds each cause in start order."""

    def __init__(self, errors: Sequence[BaseException]) -> None:
        self.errors = list(errors)
        detail = "; ".join(f"{type(e).__name__}: {e}" for e in self.errors)
        super().__init__("all", f"every endpoint failed ({detail})")
        # Chain the first cause explicitly; the rest are listed in the message and in `errors`.
        if self.errors:
            self.__cause__ = self.errors[0]
