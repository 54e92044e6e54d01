"""tollgate-client: talk to a tollgate sidecar from Python.

- :class:`TollgateClient` / :class:`AsyncTollgateClient`: `/v1/check` and `/v1/usage`,
  with reserve-then-settle helpers and retried, idempotent usage reports.
- :mod:`tollgate_client.litellm_hook`: a LiteLLM proxy callback that enforces tollgate's
  limits on every proxy replica (`litellm_settings.callbacks:
  tollgate_client.litellm_hook.proxy_handler`). It imports LiteLLM, so it is not
  imported here.
"""

from ._wire import RetryPolicy
from .client import DEFAULT_URL, AsyncTollgateClient, TollgateClient
from .types import (
    CheckResult,
    Fallback,
    Identity,
    Limit,
    Reservation,
    TollgateError,
    TollgateUnavailable,
    UsageResult,
)

__all__ = [
    "DEFAULT_URL",
    "AsyncTollgateClient",
    "CheckResult",
    "Fallback",
    "Identity",
    "Limit",
    "Reservation",
    "RetryPolicy",
    "TollgateClient",
    "TollgateError",
    "TollgateUnavailable",
    "UsageResult",
]
