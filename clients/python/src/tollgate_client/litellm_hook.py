"""A LiteLLM proxy callback that enforces tollgate's limits on every proxy replica.

Each replica runs a tollgate beside it, and all tollgates share one Redis, so the fleet
holds one request limit, token limit and budget instead of one per replica. Enable it in
the proxy's `config.yaml`:

    litellm_settings:
      callbacks: tollgate_client.litellm_hook.proxy_handler
    callback_settings:
      tollgate: {url: "http://127.0.0.1:8080", fail_open: true}

Per request:

1. `async_pre_call_hook` checks with the request's model, provider, virtual key and user,
   reserving the estimated tokens and dollars (see :mod:`litellm_estimate`). A denial is
   raised as LiteLLM's `ProxyException` 429 carrying tollgate's `x-ratelimit-*`,
   `Retry-After` and `RateLimit*` headers, which the proxy puts on its answer.
2. `async_log_success_event` (after the last chunk, for streams) settles the
   reservation with the real usage and LiteLLM's `response_cost`.
3. `async_post_call_failure_hook` (the request failed for good, after LiteLLM's own
   retries and fallbacks) gives the reservation back.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
import weakref
from dataclasses import dataclass
from typing import Any, Dict, Mapping, MutableMapping, Optional, Set

import litellm
from litellm.integrations.custom_logger import CustomLogger
from litellm.proxy._types import ProxyException

from . import litellm_estimate as estimate
from ._wire import RetryPolicy
from .client import AsyncTollgateClient
from .hook_settings import HookSettings
from .types import CheckResult, Fallback, Identity, Reservation, TollgateError

log = logging.getLogger("tollgate_client")

#: Where the hook leaves its reservation id and headers in the request's metadata.
META_ID = "tollgate_request_id"
META_HEADERS = "tollgate_headers"

#: LiteLLM call types that spend tokens the hook can estimate.
CALL_TYPES = frozenset(
    {
        "completion",
        "acompletion",
        "text_completion",
        "atext_completion",
        "responses",
        "aresponses",
        "anthropic_messages",
        "aanthropic_messages",
        "embedding",
        "aembedding",
    }
)

_REASON_TYPE = {"request_limited": "requests", "token_limited": "tokens", "budget_exceeded": "budget_exceeded"}


@dataclass
class _Pending:
    reservation: Reservation
    since: float


def _metadata(data: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """The request's metadata dict that LiteLLM carries into its logging callbacks."""
    name = "litellm_metadata" if isinstance(data.get("litellm_metadata"), dict) else "metadata"
    meta = data.get(name)
    if not isinstance(meta, dict):
        meta = data[name] = {}
    return meta


def _request_id_of(data: Optional[Mapping[str, Any]]) -> Optional[str]:
    if not isinstance(data, Mapping):
        return None
    for name in ("metadata", "litellm_metadata"):
        meta = data.get(name)
        value = meta.get(META_ID) if isinstance(meta, Mapping) else None
        if isinstance(value, str):
            return value
    return None


def _callback_block() -> Mapping[str, Any]:
    block = (getattr(litellm, "callback_settings", None) or {}).get("tollgate")
    return block if isinstance(block, Mapping) else {}


def _attr(obj: Any, name: str) -> Optional[str]:
    value = getattr(obj, name, None)
    return value if isinstance(value, str) and value else None


def _usage_tokens(response: Any) -> Optional[int]:
    usage = getattr(response, "usage", None)
    if usage is None and isinstance(response, Mapping):
        usage = response.get("usage")
    if usage is None:
        return None

    def get(name: str) -> Optional[int]:
        value = usage.get(name) if isinstance(usage, Mapping) else getattr(usage, name, None)
        return value if isinstance(value, int) else None

    total = get("total_tokens")
    if total is not None:
        return total
    # Chat names its parts prompt/completion; the Responses and Anthropic APIs input/output.
    for names in (("prompt_tokens", "completion_tokens"), ("input_tokens", "output_tokens")):
        known = [n for n in (get(name) for name in names) if n is not None]
        if known:
            return sum(known)
    return None


class TollgateHook(CustomLogger):
    """Checks before, settles after. One instance serves the whole proxy process.

    To change its behaviour in a subclass, define `async_pre_call_hook` on the subclass
    itself (calling `super()`): LiteLLM only runs a pre-call hook that the callback's own
    class defines.
    """

    def __init__(self, settings: Optional[HookSettings] = None) -> None:
        super().__init__()
        self.settings = settings or HookSettings.load(_callback_block())
        self._clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncTollgateClient]" = (
            weakref.WeakKeyDictionary()
        )
        self._pending: Dict[str, _Pending] = {}
        self._tasks: Set["asyncio.Task[None]"] = set()

    # -- plumbing -------------------------------------------------------------------

    def _client(self) -> AsyncTollgateClient:
        # httpx's async pool belongs to one event loop; LiteLLM may log from another.
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = AsyncTollgateClient(
                self.settings.url,
                timeout=self.settings.timeout_ms / 1000,
                retry=RetryPolicy(attempts=self.settings.usage_attempts),
            )
            self._clients[loop] = client
        return client

    def _take(self, request_id: Optional[str]) -> Optional[Reservation]:
        pending = self._pending.pop(request_id, None) if request_id else None
        return pending.reservation if pending else None

    def _sweep(self, now: float) -> None:
        # Insertion order is age order, so only the expired head is ever looked at.
        expired = 0
        while self._pending:
            key, oldest = next(iter(self._pending.items()))
            if now - oldest.since <= self.settings.pending_ttl_s:
                break
            del self._pending[key]
            expired += 1
        if expired:
            log.warning("tollgate: %d reservation(s) never settled; their estimates stay charged", expired)

    async def _report(self, reservation: Reservation, tokens: int, cost: float) -> None:
        try:
            await self._client().settle(reservation, tokens=tokens, cost=cost)
        except TollgateError as e:
            log.warning("tollgate: usage report %s not recorded: %s", reservation.request_id, e)

    def _spawn(self, reservation: Reservation, tokens: int, cost: float) -> None:
        task = asyncio.get_running_loop().create_task(self._report(reservation, tokens, cost))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- request → identity ---------------------------------------------------------

    def identity(self, model_group: str, deps: Any, data: Mapping[str, Any], key: Any) -> Identity:
        s = self.settings
        model = (estimate.upstream_model(deps) if s.model == "upstream" else None) or model_group
        virtual_key = None
        for source in s.virtual_key:
            name = {"key_hash": "token"}.get(source, source)
            virtual_key = _attr(key, name) or (_attr(key, "api_key") if source == "key_hash" else None)
            if virtual_key:
                break
        user = None
        for source in s.user:
            if source == "end_user":
                body_user = data.get("user")
                user = body_user if isinstance(body_user, str) and body_user else _attr(key, "end_user_id")
            else:
                user = _attr(key, "user_id")
            if user:
                break
        return Identity(
            model=model,
            provider=estimate.provider(deps) if s.send_provider else None,
            virtual_key=virtual_key,
            user=user,
        )

    # -- LiteLLM hooks --------------------------------------------------------------

    async def async_pre_call_hook(self, user_api_key_dict: Any, cache: Any, data: Dict[str, Any], call_type: Any) -> Any:
        model_group = data.get("model")
        kind = getattr(call_type, "value", call_type)
        if not isinstance(model_group, str) or not model_group or kind not in CALL_TYPES:
            return data
        now = time.monotonic()
        self._sweep(now)
        deps = estimate.deployments(model_group)
        ident = self.identity(model_group, deps, data, user_api_key_dict)
        prompt = estimate.prompt_tokens(model_group, deps, data)
        completion = estimate.completion_tokens(data, self.settings.default_completion_tokens, str(kind))
        tokens = prompt + completion
        cost = estimate.cost(model_group, deps, prompt, completion, self.settings.default_cost)
        request_id = f"litellm-{uuid.uuid4()}"
        try:
            reservation = await self._client().reserve(ident, tokens=tokens, cost=cost, request_id=request_id)
        except TollgateError as e:
            if not self.settings.fail_open:
                raise ProxyException(
                    message=f"Rate limiter unavailable, request refused (fail_open is off): {e}",
                    type="service_unavailable",
                    param=None,
                    code=503,
                    headers={"retry-after": "1"},
                ) from e
            log.warning("tollgate: check failed, letting the request through (fail_open): %s", e)
            # Nothing was reserved; the real usage is still reported after the call.
            check = CheckResult(allowed=True, fallback=Fallback(policy="hook_fail_open", error=str(e)))
            reservation = Reservation(identity=ident, request_id=request_id, check=check)
        if not reservation.allowed:
            raise self._denial(reservation.check, ident)
        meta = _metadata(data)
        meta[META_ID] = request_id
        meta[META_HEADERS] = {k: v for k, v in reservation.check.client_headers().items() if k != "retry-after"}
        self._pending[request_id] = _Pending(reservation, now)
        return data

    def _denial(self, check: CheckResult, ident: Identity) -> ProxyException:
        what = {"request_limited": "request", "token_limited": "token", "budget_exceeded": "budget"}.get(
            check.reason or "", "rate"
        )
        wait = check.retry_after_seconds
        return ProxyException(
            message=(
                f"Rate limit exceeded: {what} limit reached for model {ident.model!r}"
                + (f"; retry after {wait} s" if wait is not None else "")
            ),
            type=_REASON_TYPE.get(check.reason or "", "rate_limit_error"),
            param=None,
            code=429,
            headers=check.client_headers(),
        )

    async def async_log_success_event(self, kwargs: Dict[str, Any], response_obj: Any, start_time: Any, end_time: Any) -> None:
        params = kwargs.get("litellm_params") or {}
        reservation = self._take(_request_id_of(params))
        if reservation is None:
            return
        if kwargs.get("cache_hit") is True:
            # Answered from LiteLLM's cache: the upstream spent nothing.
            await self._report(reservation, 0, 0.0)
            return
        tokens = _usage_tokens(response_obj)
        cost = kwargs.get("response_cost")
        if cost is None:
            payload = kwargs.get("standard_logging_object") or {}
            cost = payload.get("response_cost") if isinstance(payload, Mapping) else None
        # Unknown usage keeps the estimate: better charged than lost.
        await self._report(
            reservation,
            reservation.tokens if tokens is None else tokens,
            reservation.cost if not isinstance(cost, (int, float)) else float(cost),
        )

    async def async_post_call_failure_hook(
        self, request_data: Dict[str, Any], original_exception: Exception, user_api_key_dict: Any, traceback_str: Optional[str] = None
    ) -> Any:
        reservation = self._take(_request_id_of(request_data))
        if reservation is not None:
            # In the background: the client's error answer must not wait for tollgate.
            self._spawn(reservation, 0, 0.0)
        return None

    async def async_post_call_response_headers_hook(
        self,
        data: Dict[str, Any],
        user_api_key_dict: Any,
        response: Any,
        request_headers: Optional[Dict[str, str]] = None,
        litellm_call_info: Optional[Dict[str, Any]] = None,
    ) -> Optional[Dict[str, str]]:
        if response is None or not self.settings.success_headers:
            return None  # a failure: a denial's own headers are already on its exception
        for name in ("metadata", "litellm_metadata"):
            meta = data.get(name)
            if isinstance(meta, Mapping) and isinstance(meta.get(META_HEADERS), Mapping):
                return dict(meta[META_HEADERS]) or None
        return None


#: The instance `config.yaml` names: `callbacks: tollgate_client.litellm_hook.proxy_handler`.
proxy_handler = TollgateHook()
