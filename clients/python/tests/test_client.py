"""The client's wire behaviour, against a scripted transport (tollgate's answers as the
server sends them; the real server is exercised by tests/litellm.rs)."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Callable, Dict, List

import httpx
import pytest

from tollgate_client import (
    AsyncTollgateClient,
    Identity,
    RetryPolicy,
    TollgateClient,
    TollgateError,
    TollgateUnavailable,
)

FAST = RetryPolicy(attempts=4, base_delay=0.001, max_delay=0.002)
WHO = Identity(model="gpt-4o", provider="openai", virtual_key="key-a", user="")

DENIED = {
    "allowed": False,
    "reason": "request_limited",
    "retry_after_ms": 1200,
    "limits": [
        {
            "config_id": "c1",
            "scope": "global",
            "scope_id": None,
            "model_name": "*",
            "provider": None,
            "kind": "requests",
            "reset_duration": "1m",
            "max": 5,
            "used": 5,
            "remaining": 0,
            "reset_after_ms": 1200,
        }
    ],
}
DENIED_HEADERS = {
    "retry-after": "2",
    "x-ratelimit-limit-requests": "5",
    "x-ratelimit-remaining-requests": "0",
    "x-ratelimit-reset-requests": "1.2s",
    "ratelimit": '"requests";r=0;t=2',
    "content-type": "application/json",
}


class Script:
    """Answers requests in order and records their bodies."""

    def __init__(self, *answers: Callable[[httpx.Request], httpx.Response]) -> None:
        self.answers = list(answers)
        self.bodies: List[Dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(json.loads(request.content))
        return self.answers.pop(0)(request)


def answer(status: int, body: Dict[str, Any], headers: Dict[str, str] = {}) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: httpx.Response(status, json=body, headers=headers)


def refuse(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def sync_client(script: Script) -> TollgateClient:
    return TollgateClient("http://tollgate", retry=FAST, http=httpx.Client(transport=httpx.MockTransport(script)))


def async_client(script: Script) -> AsyncTollgateClient:
    return AsyncTollgateClient(
        "http://tollgate", retry=FAST, http=httpx.AsyncClient(transport=httpx.MockTransport(script))
    )


def test_a_denial_carries_reason_limits_and_the_headers_to_forward() -> None:
    script = Script(answer(429, DENIED, DENIED_HEADERS))
    result = sync_client(script).check(WHO, tokens=100, cost=0.5)
    assert not result.allowed and result.reason == "request_limited"
    assert result.limits[0].kind == "requests" and result.limits[0].remaining == 0
    assert result.retry_after_seconds == 2
    assert result.client_headers() == {k: v for k, v in DENIED_HEADERS.items() if k != "content-type"}
    # Empty fields are left out: tollgate would treat "" as absent anyway.
    assert script.bodies == [
        {"model": "gpt-4o", "provider": "openai", "virtual_key": "key-a", "requests": 1, "tokens": 100, "cost": 0.5,
         "dry_run": False}
    ]


def test_reserve_then_settle_passes_the_estimate_and_reservation_time_back() -> None:
    allowed = {"allowed": True, "reason": None, "limits": [], "reserved_at_ms": 1795000000123}
    usage = {"recorded": True, "duplicate": False, "matched_configs": 1, "token_delta": -360, "cost_delta": -0.007}
    script = Script(answer(200, allowed), answer(200, usage))
    client = sync_client(script)
    reservation = client.reserve(WHO, tokens=1200, cost=0.02, request_id="req-42")
    assert reservation.allowed and reservation.tokens == 1200 and reservation.reserved_at_ms == 1795000000123
    result = client.settle(reservation, tokens=840, cost=0.013)
    assert result.token_delta == -360
    assert script.bodies[1] == {
        "model": "gpt-4o", "provider": "openai", "virtual_key": "key-a", "tokens": 840, "cost": 0.013,
        "reserved_tokens": 1200, "reserved_cost": 0.02, "request_id": "req-42", "reserved_at_ms": 1795000000123,
    }


def test_a_fallback_answer_reserved_nothing_so_settling_charges_in_full() -> None:
    fallback = {"allowed": True, "limits": [], "fallback": {"policy": "allow", "error": "redis timeout"}}
    script = Script(answer(200, fallback), answer(200, {"recorded": True}))
    client = sync_client(script)
    reservation = client.reserve(WHO, tokens=500, cost=0.1)
    assert reservation.allowed and reservation.tokens == 0 and reservation.reserved_at_ms is None
    client.settle(reservation, tokens=300, cost=0.05)
    assert script.bodies[1]["reserved_tokens"] == 0 and "reserved_at_ms" not in script.bodies[1]


def test_release_gives_the_whole_estimate_back() -> None:
    allowed = {"allowed": True, "limits": [], "reserved_at_ms": 7}
    script = Script(answer(200, allowed), answer(200, {"recorded": True}))
    client = sync_client(script)
    client.release(client.reserve(WHO, tokens=50, cost=0.5))
    body = script.bodies[1]
    assert (body["tokens"], body["cost"], body["reserved_tokens"], body["reserved_cost"]) == (0, 0.0, 50, 0.5)


def test_usage_is_retried_on_503_and_connection_errors_with_one_request_id() -> None:
    script = Script(refuse, answer(503, {"error": {"message": "store unavailable"}}), answer(200, {"recorded": True}))
    result = sync_client(script).usage(WHO, tokens=10, cost=0.0)
    assert result.recorded
    ids = {body["request_id"] for body in script.bodies}
    assert len(script.bodies) == 3 and len(ids) == 1, "every retry carries the same id"


def test_usage_gives_up_after_its_attempts_and_never_retries_a_4xx() -> None:
    down = Script(*[answer(503, {"error": {"message": "down"}})] * 4)
    with pytest.raises(TollgateUnavailable):
        sync_client(down).usage(WHO, tokens=1, cost=0.0, request_id="r")
    assert len(down.bodies) == FAST.attempts
    bad = Script(answer(400, {"error": {"message": "model is required"}}))
    with pytest.raises(TollgateError, match="model is required") as caught:
        sync_client(bad).usage(WHO, tokens=1, cost=0.0)
    assert not isinstance(caught.value, TollgateUnavailable) and len(bad.bodies) == 1


def test_a_check_is_never_retried_and_says_tollgate_is_unavailable() -> None:
    script = Script(refuse, refuse)
    with pytest.raises(TollgateUnavailable):
        sync_client(script).check(WHO)
    assert len(script.bodies) == 1


def test_the_async_client_behaves_the_same() -> None:
    async def run() -> None:
        allowed = {"allowed": True, "limits": [], "reserved_at_ms": 9}
        script = Script(answer(200, allowed), refuse, answer(200, {"recorded": True, "duplicate": True}))
        async with async_client(script) as client:
            reservation = await client.reserve(WHO, tokens=10, cost=0.0, request_id="x")
            result = await client.settle(reservation, tokens=4, cost=0.0)
        assert result.duplicate
        assert [b.get("request_id") for b in script.bodies[1:]] == ["x", "x"]
        assert script.bodies[2]["reserved_at_ms"] == 9

    asyncio.run(run())


def test_a_timeout_is_unavailability() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(TollgateUnavailable, match="ReadTimeout"):
        sync_client(Script(slow)).check(WHO)
