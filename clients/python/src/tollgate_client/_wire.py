"""Request bodies, answer parsing and the retry schedule, shared by the sync and the
async client so that the two can never drift apart."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional

import httpx

from .types import CheckResult, Identity, Reservation, TollgateError, TollgateUnavailable, UsageResult

CHECK_PATH = "/v1/check"
USAGE_PATH = "/v1/usage"


@dataclass(frozen=True)
class RetryPolicy:
    """How usage reports are retried: `attempts` in all, exponential backoff with jitter.

    Only reports are retried. They carry a `request_id`, which tollgate applies once
    however often it arrives, so a retry after a lost answer never double-counts. A
    check is not retried: it is on the request path, and a late retry would consume
    twice for one request.
    """

    attempts: int = 5
    base_delay: float = 0.1
    max_delay: float = 2.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt `attempt + 1` (attempt counts from 0)."""
        cap = min(self.max_delay, self.base_delay * 2.0**attempt)
        return cap / 2 + random.uniform(0, cap / 2)


def check_body(identity: Identity, requests: int, tokens: int, cost: float, dry_run: bool) -> Dict[str, Any]:
    body: Dict[str, Any] = identity.as_json()
    body.update({"requests": int(requests), "tokens": int(tokens), "cost": float(cost), "dry_run": bool(dry_run)})
    return body


def usage_body(
    identity: Identity,
    tokens: int,
    cost: float,
    reserved_tokens: int,
    reserved_cost: float,
    reserved_at_ms: Optional[int],
    request_id: str,
) -> Dict[str, Any]:
    body: Dict[str, Any] = identity.as_json()
    body.update(
        {
            "tokens": max(0, int(tokens)),
            "cost": max(0.0, float(cost)),
            "reserved_tokens": max(0, int(reserved_tokens)),
            "reserved_cost": max(0.0, float(reserved_cost)),
            "request_id": request_id,
        }
    )
    if reserved_at_ms is not None:
        body["reserved_at_ms"] = int(reserved_at_ms)
    return body


def settle_body(reservation: Reservation, tokens: int, cost: float) -> Dict[str, Any]:
    return usage_body(
        reservation.identity,
        tokens,
        cost,
        reservation.tokens,
        reservation.cost,
        reservation.reserved_at_ms,
        reservation.request_id,
    )


def _json(response: httpx.Response) -> Mapping[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, Mapping):
        raise TollgateError(
            f"tollgate answered {response.status_code} without a JSON object: {response.text[:200]!r}",
            response.status_code,
        )
    return body


def _error(response: httpx.Response) -> TollgateError:
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text[:200]
    cls = TollgateUnavailable if response.status_code >= 500 else TollgateError
    return cls(f"tollgate answered {response.status_code}: {message}", response.status_code)


def parse_check(response: httpx.Response) -> CheckResult:
    """200 is allowed, 429 denied; anything else is an error of tollgate's or ours."""
    if response.status_code in (200, 429):
        return CheckResult.from_response(response.status_code, _json(response), response.headers)
    raise _error(response)


def parse_usage(response: httpx.Response) -> UsageResult:
    if response.status_code == 200:
        return UsageResult.from_json(_json(response))
    raise _error(response)


def retryable(error: Exception) -> bool:
    """Transport failures and 5xx are worth another try; a 4xx will not change."""
    if isinstance(error, TollgateUnavailable):
        return True
    return isinstance(error, httpx.TransportError)


def unavailable(error: httpx.HTTPError, url: str) -> TollgateUnavailable:
    return TollgateUnavailable(f"tollgate at {url} unreachable: {type(error).__name__}: {error}")
