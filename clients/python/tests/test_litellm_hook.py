"""The hook's own logic with the real LiteLLM library: the estimate, the mapping of a
LiteLLM request to tollgate's fields, and what each hook sends (tollgate's answers are
scripted here; tests/litellm.rs runs the hook in real proxies against real tollgates)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Dict, List

import httpx
import litellm
import pytest
from litellm.proxy._types import ProxyException, UserAPIKeyAuth

from tollgate_client import AsyncTollgateClient, RetryPolicy
from tollgate_client import litellm_estimate as estimate
from tollgate_client.hook_settings import HookSettings
from tollgate_client.litellm_hook import META_ID, TollgateHook

MESSAGES = [{"role": "user", "content": "How many tokens is this question?"}]
PRICED = {
    "model_name": "m",
    "litellm_params": {"model": "openai/m", "input_cost_per_token": 0.001, "output_cost_per_token": 0.002},
}
KEY = UserAPIKeyAuth(api_key="hashed", token="hashed", key_alias="key-a", team_alias="team-a", end_user_id="eu")


def test_prompt_tokens_are_litellms_own_count() -> None:
    assert estimate.prompt_tokens("m", [PRICED], {"messages": MESSAGES}) == litellm.token_counter(
        model="openai/m", messages=MESSAGES
    )


def test_completion_is_max_tokens_times_n_or_the_default() -> None:
    assert estimate.completion_tokens({"max_tokens": 50, "n": 3}, 256, "acompletion") == 150
    assert estimate.completion_tokens({"max_completion_tokens": 7}, 256, "acompletion") == 7
    assert estimate.completion_tokens({}, 256, "acompletion") == 256
    assert estimate.completion_tokens({"max_tokens": 50}, 256, "aembedding") == 0


def test_cost_uses_the_deployments_prices_the_cost_map_or_the_default() -> None:
    assert estimate.cost("m", [PRICED], 10, 20, 0.0) == pytest.approx(10 * 0.001 + 20 * 0.002)
    known = {"model_name": "g", "litellm_params": {"model": "openai/gpt-4o"}}
    p, c = litellm.cost_per_token(model="gpt-4o", prompt_tokens=10, completion_tokens=20)
    assert estimate.cost("g", [known], 10, 20, 0.0) == pytest.approx(p + c)
    unknown = {"model_name": "u", "litellm_params": {"model": "openai/not-a-real-model"}}
    assert estimate.cost("u", [unknown], 10, 20, 0.25) == 0.25
    # The dearest deployment of a group bounds the estimate.
    assert estimate.cost("mix", [PRICED, known], 10, 20, 0.0) == pytest.approx(max(p + c, 0.05))


def test_provider_and_upstream_model_only_when_the_group_agrees() -> None:
    other = {"model_name": "m", "litellm_params": {"model": "anthropic/claude-x"}}
    assert estimate.provider([PRICED]) == "openai" and estimate.upstream_model([PRICED]) == "m"
    assert estimate.provider([PRICED, other]) is None


def hook(**settings: Any) -> TollgateHook:
    return TollgateHook(HookSettings.load(settings, env={}))


def test_real_usage_is_the_total_or_one_pair_of_parts() -> None:
    from tollgate_client.litellm_hook import _usage_tokens

    assert _usage_tokens({"usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 9}}) == 9
    assert _usage_tokens({"usage": {"input_tokens": 3, "output_tokens": 4}}) == 7
    assert _usage_tokens({"usage": {"prompt_tokens": 3, "input_tokens": 3}}) == 3
    assert _usage_tokens({"choices": []}) is None


def test_identity_follows_the_configured_sources() -> None:
    data = {"model": "m", "user": "alice"}
    ident = hook().identity("m", [PRICED], data, KEY)
    assert (ident.model, ident.provider, ident.virtual_key, ident.user) == ("m", "openai", "key-a", "alice")
    assert hook(virtual_key="team_alias").identity("m", [], {}, KEY).virtual_key == "team-a"
    no_alias = UserAPIKeyAuth(api_key="hashed", token="hashed")
    assert hook().identity("m", [], {}, no_alias).virtual_key == "hashed"
    assert hook().identity("m", [], {}, KEY).user == "eu", "the end-user id when the body has no user"
    assert hook(user="none", send_provider=False).identity("m", [PRICED], data, KEY).user is None
    assert hook(model="upstream").identity("group", [PRICED], data, KEY).model == "m"


class Tollgate:
    """A scripted tollgate: check answers in order, usage reports recorded."""

    def __init__(self, *checks: httpx.Response) -> None:
        self.checks = list(checks)
        self.usage: List[Dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/usage":
            self.usage.append(json.loads(request.content))
            return httpx.Response(200, json={"recorded": True})
        return self.checks.pop(0)

    def install(self, h: TollgateHook) -> None:
        transport = httpx.MockTransport(self)
        h._clients[asyncio.get_running_loop()] = AsyncTollgateClient(
            "http://tollgate", retry=RetryPolicy(attempts=1), http=httpx.AsyncClient(transport=transport)
        )


ALLOWED = httpx.Response(
    200, json={"allowed": True, "limits": [], "reserved_at_ms": 5}, headers={"x-ratelimit-remaining-requests": "4"}
)


def test_a_call_is_reserved_then_settled_with_usage_and_response_cost() -> None:
    async def run() -> None:
        h, tollgate = hook(default_completion_tokens=100), Tollgate(ALLOWED)
        tollgate.install(h)
        data: Dict[str, Any] = {"model": "m", "messages": MESSAGES, "litellm_call_id": "c1"}
        data = await h.async_pre_call_hook(KEY, None, data, "acompletion")
        assert await h.async_post_call_response_headers_hook(data, KEY, object()) == {
            "x-ratelimit-remaining-requests": "4"
        }
        response = litellm.ModelResponse(usage={"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7})
        kwargs = {"litellm_params": {"metadata": data["metadata"]}, "response_cost": 0.01}
        await h.async_log_success_event(kwargs, response, None, None)
        await h.async_log_success_event(kwargs, response, None, None)  # once only
        assert len(tollgate.usage) == 1
        report = tollgate.usage[0]
        assert (report["tokens"], report["cost"], report["reserved_at_ms"]) == (7, 0.01, 5)
        assert report["reserved_tokens"] == estimate.prompt_tokens("m", [], data) + 100
        assert report["request_id"] == data["metadata"][META_ID]

    asyncio.run(run())


def test_a_cache_hit_gives_the_estimate_back_and_old_reservations_expire() -> None:
    async def run() -> None:
        h, tollgate = hook(pending_ttl_s=60), Tollgate(ALLOWED, ALLOWED)
        tollgate.install(h)
        data = await h.async_pre_call_hook(KEY, None, {"model": "m", "messages": MESSAGES}, "acompletion")
        response = litellm.ModelResponse(usage={"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7})
        kwargs = {"litellm_params": {"metadata": data["metadata"]}, "response_cost": 0.0, "cache_hit": True}
        await h.async_log_success_event(kwargs, response, None, None)
        assert (tollgate.usage[0]["tokens"], tollgate.usage[0]["cost"]) == (0, 0.0)
        await h.async_pre_call_hook(KEY, None, {"model": "m", "messages": MESSAGES}, "acompletion")
        assert len(h._pending) == 1
        h._sweep(time.monotonic() + 61)
        assert not h._pending

    asyncio.run(run())


def test_a_failed_call_is_released() -> None:
    async def run() -> None:
        h, tollgate = hook(), Tollgate(ALLOWED)
        tollgate.install(h)
        data = await h.async_pre_call_hook(KEY, None, {"model": "m", "messages": MESSAGES}, "acompletion")
        await h.async_post_call_failure_hook(data, RuntimeError("upstream 500"), KEY)
        await asyncio.gather(*h._tasks)
        assert [(u["tokens"], u["cost"], u["reserved_cost"]) for u in tollgate.usage] == [(0, 0.0, 0.0)]
        assert tollgate.usage[0]["reserved_tokens"] > 0

    asyncio.run(run())


def test_a_denial_is_a_429_with_the_headers_to_forward() -> None:
    denied = httpx.Response(
        429,
        json={"allowed": False, "reason": "token_limited", "retry_after_ms": 1500, "limits": []},
        headers={"retry-after": "2", "x-ratelimit-limit-tokens": "1000", "x-ratelimit-remaining-tokens": "3"},
    )

    async def run() -> None:
        h, tollgate = hook(), Tollgate(denied)
        tollgate.install(h)
        with pytest.raises(ProxyException) as caught:
            await h.async_pre_call_hook(KEY, None, {"model": "m", "messages": MESSAGES}, "acompletion")
        e = caught.value
        assert (e.code, e.type) == ("429", "tokens")
        assert e.headers == {"retry-after": "2", "x-ratelimit-limit-tokens": "1000", "x-ratelimit-remaining-tokens": "3"}
        assert "retry after 2 s" in e.message
        assert not h._pending

    asyncio.run(run())


@pytest.mark.parametrize("fail_open", [True, False])
def test_tollgate_unreachable_follows_fail_open(fail_open: bool) -> None:
    async def run() -> None:
        # Port 9 (discard): nothing listens on this machine, so the connection is refused.
        h = hook(url="http://127.0.0.1:9", fail_open=fail_open, timeout_ms=200)
        data = {"model": "m", "messages": MESSAGES}
        if fail_open:
            assert await h.async_pre_call_hook(KEY, None, data, "acompletion") is data
        else:
            with pytest.raises(ProxyException) as caught:
                await h.async_pre_call_hook(KEY, None, data, "acompletion")
            assert caught.value.code == "503" and caught.value.headers == {"retry-after": "1"}

    asyncio.run(run())


def test_calls_without_a_model_or_of_other_kinds_pass_untouched() -> None:
    async def run() -> None:
        h = hook(url="http://127.0.0.1:9", fail_open=False)
        assert await h.async_pre_call_hook(KEY, None, {"messages": MESSAGES}, "acompletion") == {"messages": MESSAGES}
        assert await h.async_pre_call_hook(KEY, None, {"model": "m"}, "aimage_generation") == {"model": "m"}

    asyncio.run(run())
