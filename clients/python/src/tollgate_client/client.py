"""Sync and async clients for tollgate's hot path: `POST /v1/check` and `POST /v1/usage`.

The reserve-then-settle pattern is what keeps many requests in flight under a limit:
reserve an upper-bound estimate with the check, then report the real usage with the
estimate as `reserved_*` (and the check's `reserved_at_ms`, so a refund only gives back
what the reservation still holds). :meth:`reserve`, :meth:`settle` and :meth:`release`
wrap exactly that.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any, Dict, Optional

import httpx

from . import _wire
from ._wire import RetryPolicy
from .types import CheckResult, Identity, Reservation, UsageResult

DEFAULT_URL = "http://127.0.0.1:8080"


def _timeout(timeout: float) -> httpx.Timeout:
    # One bound for connect, read and write: a sidecar on localhost answers in
    # milliseconds, and a check must never hold a request for long.
    return httpx.Timeout(timeout)


def _reservation(identity: Identity, request_id: Optional[str], result: CheckResult, tokens: int, cost: float) -> Reservation:
    held = result.consumed
    return Reservation(
        identity=identity,
        request_id=request_id or str(uuid.uuid4()),
        check=result,
        tokens=int(tokens) if held else 0,
        cost=float(cost) if held else 0.0,
    )


class TollgateClient:
    """Blocking client. Thread-safe (one pooled `httpx.Client`); close it, or use `with`."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        timeout: float = 0.5,
        retry: RetryPolicy = RetryPolicy(),
        http: Optional[httpx.Client] = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry = retry
        self._http = http or httpx.Client(timeout=_timeout(timeout))
        self._owns_http = http is None

    def __enter__(self) -> "TollgateClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def _post(self, path: str, body: Dict[str, Any]) -> httpx.Response:
        url = self.base_url + path
        try:
            return self._http.post(url, json=body)
        except httpx.HTTPError as e:
            raise _wire.unavailable(e, url) from e

    def check(
        self, identity: Identity, *, requests: int = 1, tokens: int = 0, cost: float = 0.0, dry_run: bool = False
    ) -> CheckResult:
        """One atomic check-and-consume. Raises `TollgateUnavailable` if tollgate cannot answer."""
        body = _wire.check_body(identity, requests, tokens, cost, dry_run)
        return _wire.parse_check(self._post(_wire.CHECK_PATH, body))

    def usage(
        self,
        identity: Identity,
        *,
        tokens: int,
        cost: float,
        reserved_tokens: int = 0,
        reserved_cost: float = 0.0,
        reserved_at_ms: Optional[int] = None,
        request_id: Optional[str] = None,
    ) -> UsageResult:
        """Reports real usage, retried on 503 and transport errors under one `request_id`."""
        body = _wire.usage_body(
            identity, tokens, cost, reserved_tokens, reserved_cost, reserved_at_ms, request_id or str(uuid.uuid4())
        )
        return self._report(body)

    def _report(self, body: Dict[str, Any]) -> UsageResult:
        for attempt in range(self.retry.attempts):
            try:
                return _wire.parse_usage(self._post(_wire.USAGE_PATH, body))
            except Exception as e:  # noqa: BLE001 - filtered by retryable()
                if not _wire.retryable(e) or attempt + 1 >= self.retry.attempts:
                    raise
            time.sleep(self.retry.delay(attempt))
        raise AssertionError("unreachable: RetryPolicy.attempts must be at least 1")

    def reserve(
        self, identity: Identity, *, tokens: int = 0, cost: float = 0.0, requests: int = 1, request_id: Optional[str] = None
    ) -> Reservation:
        """Checks and charges an estimate. `reservation.allowed` says whether to go on."""
        result = self.check(identity, requests=requests, tokens=tokens, cost=cost)
        return _reservation(identity, request_id, result, tokens, cost)

    def settle(self, reservation: Reservation, *, tokens: int, cost: float) -> UsageResult:
        """Replaces the reservation's estimate with the real usage (a refund when lower)."""
        return self._report(_wire.settle_body(reservation, tokens, cost))

    def release(self, reservation: Reservation) -> UsageResult:
        """Gives the whole estimate back: the upstream call failed and used nothing."""
        return self.settle(reservation, tokens=0, cost=0.0)


class AsyncTollgateClient:
    """asyncio client. Create it inside the event loop that uses it; `aclose` it, or `async with`."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        timeout: float = 0.5,
        retry: RetryPolicy = RetryPolicy(),
        http: Optional[httpx.AsyncClient] = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry = retry
        self._http = http or httpx.AsyncClient(timeout=_timeout(timeout))
        self._owns_http = http is None

    async def __aenter__(self) -> "AsyncTollgateClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def _post(self, path: str, body: Dict[str, Any]) -> httpx.Response:
        url = self.base_url + path
        try:
            return await self._http.post(url, json=body)
        except httpx.HTTPError as e:
            raise _wire.unavailable(e, url) from e

    async def check(
        self, identity: Identity, *, requests: int = 1, tokens: int = 0, cost: float = 0.0, dry_run: bool = False
    ) -> CheckResult:
        """One atomic check-and-consume. Raises `TollgateUnavailable` if tollgate cannot answer."""
        body = _wire.check_body(identity, requests, tokens, cost, dry_run)
        return _wire.parse_check(await self._post(_wire.CHECK_PATH, body))

    async def usage(
        self,
        identity: Identity,
        *,
        tokens: int,
        cost: float,
        reserved_tokens: int = 0,
        reserved_cost: float = 0.0,
        reserved_at_ms: Optional[int] = None,
        request_id: Optional[str] = None,
    ) -> UsageResult:
        """Reports real usage, retried on 503 and transport errors under one `request_id`."""
        body = _wire.usage_body(
            identity, tokens, cost, reserved_tokens, reserved_cost, reserved_at_ms, request_id or str(uuid.uuid4())
        )
        return await self._report(body)

    async def _report(self, body: Dict[str, Any]) -> UsageResult:
        for attempt in range(self.retry.attempts):
            try:
                return _wire.parse_usage(await self._post(_wire.USAGE_PATH, body))
            except Exception as e:  # noqa: BLE001 - filtered by retryable()
                if not _wire.retryable(e) or attempt + 1 >= self.retry.attempts:
                    raise
            await asyncio.sleep(self.retry.delay(attempt))
        raise AssertionError("unreachable: RetryPolicy.attempts must be at least 1")

    async def reserve(
        self, identity: Identity, *, tokens: int = 0, cost: float = 0.0, requests: int = 1, request_id: Optional[str] = None
    ) -> Reservation:
        """Checks and charges an estimate. `reservation.allowed` says whether to go on."""
        result = await self.check(identity, requests=requests, tokens=tokens, cost=cost)
        return _reservation(identity, request_id, result, tokens, cost)

    async def settle(self, reservation: Reservation, *, tokens: int, cost: float) -> UsageResult:
        """Replaces the reservation's estimate with the real usage (a refund when lower)."""
        return await self._report(_wire.settle_body(reservation, tokens, cost))

    async def release(self, reservation: Reservation) -> UsageResult:
        """Gives the whole estimate back: the upstream call failed and used nothing."""
        return await self.settle(reservation, tokens=0, cost=0.0)
