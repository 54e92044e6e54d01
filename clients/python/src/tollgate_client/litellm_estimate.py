"""What a LiteLLM request may cost, estimated before the call with LiteLLM's own tools.

The estimate is what the check reserves, so it should be an upper bound: prompt tokens
counted with `litellm.token_counter`, plus the completion the request allows
(`max_tokens`, or a configured default), times `n`; the cost of that at the highest
price among the model group's deployments. The real usage replaces it after the call.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Mapping, Optional, Sequence

import litellm

log = logging.getLogger("tollgate_client")


def deployments(model_group: str) -> List[Dict[str, Any]]:
    """The proxy router's deployments of `model_group` (empty outside a proxy, or unknown)."""
    try:
        from litellm.proxy.proxy_server import llm_router
    except Exception:  # noqa: BLE001 - no proxy in this process
        return []
    if llm_router is None:
        return []
    try:
        found = llm_router.get_model_list(model_name=model_group) or []
        return [dict(d) for d in found]
    except Exception:  # noqa: BLE001 - a router that cannot list is treated as unknown
        return []


def _params(deployment: Mapping[str, Any]) -> Mapping[str, Any]:
    params = deployment.get("litellm_params") or {}
    return params if isinstance(params, Mapping) else {}


def _provider_and_model(deployment: Mapping[str, Any]) -> "tuple[Optional[str], Optional[str]]":
    params = _params(deployment)
    model = params.get("model")
    if not isinstance(model, str):
        return None, None
    provider = params.get("custom_llm_provider")
    try:
        bare, resolved, _, _ = litellm.get_llm_provider(model=model, custom_llm_provider=provider)
        return resolved, bare
    except Exception:  # noqa: BLE001 - unknown provider: no provider field
        return (provider if isinstance(provider, str) else None), model


def provider(deps: Sequence[Mapping[str, Any]]) -> Optional[str]:
    """LiteLLM's `custom_llm_provider` of the group, when all its deployments agree."""
    found = {_provider_and_model(d)[0] for d in deps}
    return found.pop() if len(found) == 1 else None


def upstream_model(deps: Sequence[Mapping[str, Any]]) -> Optional[str]:
    """The deployments' model without provider prefix, when all of them agree."""
    found = {_provider_and_model(d)[1] for d in deps}
    return found.pop() if len(found) == 1 else None


def _tokenizer_model(model_group: str, deps: Sequence[Mapping[str, Any]]) -> str:
    for d in deps:
        model = _params(d).get("model")
        if isinstance(model, str):
            return model
    return model_group


def prompt_tokens(model_group: str, deps: Sequence[Mapping[str, Any]], data: Mapping[str, Any]) -> int:
    """Prompt tokens by LiteLLM's counter (images at its default size: no fetch on the hot path)."""
    model = _tokenizer_model(model_group, deps)
    messages = data.get("messages")
    try:
        if isinstance(messages, list):
            return int(
                litellm.token_counter(
                    model=model, messages=messages, tools=data.get("tools"), use_default_image_token_count=True
                )
            )
        text = data.get("prompt", data.get("input"))
        if isinstance(text, str) or (isinstance(text, list) and all(isinstance(t, str) for t in text)):
            return int(litellm.token_counter(model=model, text=text))
    except Exception as e:  # noqa: BLE001 - a counter failure must not fail the request
        log.warning("tollgate: could not count prompt tokens for %s: %s", model_group, e)
    # Unknown shape: a rough bound from the serialized size (about 4 bytes a token).
    return len(repr(messages if messages is not None else data.get("input", ""))) // 4


def completion_tokens(data: Mapping[str, Any], default: int, call_type: str) -> int:
    """What the request lets the model write: `max_tokens` (or its aliases) × `n`."""
    if "embedding" in call_type:
        return 0
    limit = default
    for name in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        value = data.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            limit = value
            break
    n = data.get("n")
    choices = n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1
    return limit * choices


def _price(deployment: Mapping[str, Any], prompt: int, completion: int) -> float:
    params = _params(deployment)
    info = deployment.get("model_info") or {}
    for source in (params, info):
        if isinstance(source, Mapping) and (
            source.get("input_cost_per_token") is not None or source.get("output_cost_per_token") is not None
        ):
            return prompt * float(source.get("input_cost_per_token") or 0) + completion * float(
                source.get("output_cost_per_token") or 0
            )
    provider_name, _ = _provider_and_model(deployment)
    model = params.get("model")
    if not isinstance(model, str):
        return 0.0
    try:
        p, c = litellm.cost_per_token(
            model=model, custom_llm_provider=provider_name, prompt_tokens=prompt, completion_tokens=completion
        )
        return float(p) + float(c)
    except Exception:  # noqa: BLE001 - not in the cost map
        return 0.0


def cost(
    model_group: str, deps: Sequence[Mapping[str, Any]], prompt: int, completion: int, default: float
) -> float:
    """Dollars of `prompt` + `completion` tokens at the dearest deployment of the group."""
    prices = [_price(d, prompt, completion) for d in deps]
    if not deps:
        try:
            p, c = litellm.cost_per_token(model=model_group, prompt_tokens=prompt, completion_tokens=completion)
            prices.append(float(p) + float(c))
        except Exception:  # noqa: BLE001 - not in the cost map
            pass
    best = max(prices, default=0.0)
    return best if best > 0 else default
