"""The client against a real tollgate. tests/python_client.rs starts one and runs this
file with TOLLGATE_TEST_URL set; without it these tests are skipped."""

from __future__ import annotations

import asyncio
import os
import uuid

import httpx
import pytest

from tollgate_client import AsyncTollgateClient, Identity, TollgateClient

URL = os.environ.get("TOLLGATE_TEST_URL")
pytestmark = pytest.mark.skipif(not URL, reason="TOLLGATE_TEST_URL not set (tests/python_client.rs sets it)")


def model_with_limits(tokens: int, budget: float) -> str:
    """A fresh model name with a token limit and a budget on it."""
    model = f"m-{uuid.uuid4().hex[:8]}"
    config = {
        "model_name": model,
        "rate_limit": {"token_max_limit": tokens, "token_reset_duration": "1h"},
        "budgets": [{"max_limit": budget, "reset_duration": "1d"}],
    }
    answer = httpx.post(f"{URL}/api/governance/model-configs", json=config)
    assert answer.status_code == 200, answer.text
    return model


def used(client: TollgateClient, who: Identity, kind: str) -> float:
    result = client.check(who, requests=0, dry_run=True)
    return next(limit.used for limit in result.limits if limit.kind == kind)


def test_reserve_deny_settle_retry_and_release() -> None:
    who = Identity(model=model_with_limits(tokens=100, budget=1.0), user="alice")
    with TollgateClient(URL or "") as client:
        first = client.reserve(who, tokens=60, cost=0.3)
        assert first.allowed and first.reserved_at_ms is not None
        assert first.check.headers["x-ratelimit-remaining-tokens"] == "40"

        refused = client.reserve(who, tokens=60, cost=0.3)
        assert not refused.allowed and refused.check.reason == "token_limited"
        assert refused.check.client_headers()["x-ratelimit-limit-tokens"] == "100"
        assert refused.check.retry_after_seconds is not None and refused.check.retry_after_seconds >= 1
        assert refused.tokens == 0, "a denied check consumed nothing"

        settled = client.settle(first, tokens=20, cost=0.1)
        assert settled.recorded and settled.token_delta == -40 and not settled.duplicate
        assert client.settle(first, tokens=20, cost=0.1).duplicate, "one request_id is applied once"
        assert used(client, who, "tokens") == 20
        assert used(client, who, "budget") == pytest.approx(0.1)

        second = client.reserve(who, tokens=70, cost=0.5)
        assert second.allowed
        client.release(second)
        assert used(client, who, "tokens") == 20
        assert used(client, who, "budget") == pytest.approx(0.1)


def test_the_async_client_against_the_same_server() -> None:
    who = Identity(model=model_with_limits(tokens=50, budget=1.0), virtual_key="key-a")

    async def run() -> None:
        async with AsyncTollgateClient(URL or "") as client:
            reservation = await client.reserve(who, tokens=50, cost=0.2)
            assert reservation.allowed
            assert not (await client.check(who, tokens=1)).allowed
            await client.settle(reservation, tokens=30, cost=0.25)
            result = await client.check(who, tokens=20, dry_run=True)
            assert result.allowed and next(l.used for l in result.limits if l.kind == "tokens") == 30

    asyncio.run(run())
