"""The values exchanged with tollgate's `/v1/check` and `/v1/usage`.

Plain frozen dataclasses, so that a result can be logged, compared in tests and passed
between threads without surprises. Parsing is lenient about fields it does not know
(a newer tollgate may add some) and strict about the ones the decision rests on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple

#: Headers of a check answer that a gateway passes on to its own clients: OpenAI's
#: `x-ratelimit-*`, `Retry-After`, and the IETF draft `RateLimit` / `RateLimit-Policy`.
FORWARDED_HEADERS: Tuple[str, ...] = (
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
    "retry-after",
    "ratelimit",
    "ratelimit-policy",
)


@dataclass(frozen=True)
class Identity:
    """Who is asking: the four fields tollgate matches configs on.

    `provider`, `virtual_key` and `user` are optional; tollgate treats empty strings as
    absent, and so does :meth:`as_json`, so an unset LiteLLM alias never becomes a scope.
    """

    model: str
    provider: Optional[str] = None
    virtual_key: Optional[str] = None
    user: Optional[str] = None

    def as_json(self) -> Dict[str, str]:
        out = {"model": self.model}
        for name in ("provider", "virtual_key", "user"):
            value = getattr(self, name)
            if value:
                out[name] = value
        return out


@dataclass(frozen=True)
class Limit:
    """One limit of one matching config, as the check saw it (`used` is after the check)."""

    config_id: str
    kind: str  # "requests" | "tokens" | "budget"
    max: float
    used: float
    remaining: float
    reset_after_ms: int
    reset_duration: str
    scope: str = "global"
    scope_id: Optional[str] = None
    model_name: str = "*"
    provider: Optional[str] = None
    budget_id: Optional[str] = None

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> "Limit":
        return cls(
            config_id=str(raw.get("config_id", "")),
            kind=str(raw.get("kind", "")),
            max=raw.get("max", 0),
            used=raw.get("used", 0),
            remaining=raw.get("remaining", 0),
            reset_after_ms=int(raw.get("reset_after_ms", 0) or 0),
            reset_duration=str(raw.get("reset_duration", "")),
            scope=str(raw.get("scope", "global")),
            scope_id=raw.get("scope_id"),
            model_name=str(raw.get("model_name", "*")),
            provider=raw.get("provider"),
            budget_id=raw.get("budget_id"),
        )


@dataclass(frozen=True)
class Fallback:
    """Present when tollgate could not reach its store and answered by `--on-store-error`.

    Such an answer consumed nothing, whatever it says about `allowed`.
    """

    policy: str  # "allow" | "deny"
    error: str


@dataclass(frozen=True)
class CheckResult:
    """The answer of `POST /v1/check`."""

    allowed: bool
    reason: Optional[str] = None  # request_limited | token_limited | budget_exceeded | store_unavailable
    retry_after_ms: Optional[int] = None
    limits: Tuple[Limit, ...] = ()
    reserved_at_ms: Optional[int] = None
    fallback: Optional[Fallback] = None
    #: The answer's rate-limit headers (lower-case names), see :data:`FORWARDED_HEADERS`.
    headers: Mapping[str, str] = field(default_factory=dict)
    status_code: int = 200

    @property
    def consumed(self) -> bool:
        """True when this check charged the store, so a settle must pass it back as reserved."""
        return self.allowed and self.fallback is None and self.reserved_at_ms is not None

    @property
    def retry_after_seconds(self) -> Optional[int]:
        """`Retry-After` as tollgate sent it (whole seconds, rounded up), if any."""
        value = self.headers.get("retry-after")
        if value is not None and value.isdigit():
            return int(value)
        if self.retry_after_ms is not None:
            return -(-self.retry_after_ms // 1000)
        return None

    def client_headers(self) -> Dict[str, str]:
        """The headers a gateway should put on its own answer to the client."""
        return {name: self.headers[name] for name in FORWARDED_HEADERS if name in self.headers}

    @classmethod
    def from_response(cls, status_code: int, body: Mapping[str, Any], headers: Mapping[str, str]) -> "CheckResult":
        fallback = body.get("fallback")
        return cls(
            allowed=bool(body.get("allowed")),
            reason=body.get("reason"),
            retry_after_ms=body.get("retry_after_ms"),
            limits=tuple(Limit.from_json(item) for item in body.get("limits") or ()),
            reserved_at_ms=body.get("reserved_at_ms"),
            fallback=(
                Fallback(policy=str(fallback.get("policy", "")), error=str(fallback.get("error", "")))
                if isinstance(fallback, Mapping)
                else None
            ),
            headers={k.lower(): v for k, v in headers.items() if k.lower() in FORWARDED_HEADERS},
            status_code=status_code,
        )


@dataclass(frozen=True)
class UsageResult:
    """The answer of `POST /v1/usage`."""

    recorded: bool
    duplicate: bool = False
    matched_configs: int = 0
    token_delta: int = 0
    cost_delta: float = 0.0

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> "UsageResult":
        return cls(
            recorded=bool(body.get("recorded")),
            duplicate=bool(body.get("duplicate")),
            matched_configs=int(body.get("matched_configs") or 0),
            token_delta=int(body.get("token_delta") or 0),
            cost_delta=float(body.get("cost_delta") or 0.0),
        )


@dataclass(frozen=True)
class Reservation:
    """An estimate charged by a check, to be settled with the real usage later.

    `tokens` / `cost` are what the store really holds for this reservation: zero when
    the check was denied or answered by the fallback (nothing consumed), so settling
    such a reservation charges the real usage in full rather than refunding a charge
    that never happened.
    """

    identity: Identity
    request_id: str
    check: CheckResult
    tokens: int = 0
    cost: float = 0.0

    @property
    def allowed(self) -> bool:
        return self.check.allowed

    @property
    def reserved_at_ms(self) -> Optional[int]:
        return self.check.reserved_at_ms if self.check.consumed else None


class TollgateError(Exception):
    """tollgate answered something this client cannot use (a 4xx other than 429)."""

    def __init__(self, message: str, status_code: Optional[int] = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class TollgateUnavailable(TollgateError):
    """tollgate could not be reached, timed out, or answered 5xx (after any retries)."""
