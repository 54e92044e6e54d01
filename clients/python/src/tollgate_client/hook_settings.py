"""Settings of the LiteLLM hook, from LiteLLM's `config.yaml` or the environment.

In `config.yaml` they sit in a `callback_settings.tollgate` block (LiteLLM hands that
block to callbacks as `litellm.callback_settings`); each key may also come from an
environment variable `TOLLGATE_<KEY>` (upper case), and a value may be
`os.environ/NAME`, as elsewhere in LiteLLM's config. The block wins over the
environment, and both over the defaults. Unknown keys and bad values raise at start-up:
a typo in a limit's plumbing must not silently turn limits off.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any, Dict, Mapping, Optional, Tuple

from .client import DEFAULT_URL

VIRTUAL_KEY_SOURCES = ("key_alias", "team_alias", "team_id", "key_hash", "user_id")
USER_SOURCES = ("end_user", "user_id")
MODEL_SOURCES = ("model_group", "upstream")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class HookSettings:
    #: Base URL of this replica's tollgate.
    url: str = DEFAULT_URL
    #: Longest wait for a check (and for each attempt of a usage report).
    timeout_ms: int = 500
    #: tollgate unreachable or failing: let requests through (True) or answer 503 (False).
    fail_open: bool = True
    #: `model_group`: the public model name the client asked for. `upstream`: the
    #: deployment's model without its provider prefix, when the group has exactly one.
    model: str = "model_group"
    #: Where `virtual_key` comes from: the first of these that is set on the caller's key.
    virtual_key: Tuple[str, ...] = ("key_alias", "key_hash")
    #: Where `user` comes from: `end_user` (the request's `user` field, or the end-user id
    #: LiteLLM resolved), `user_id` (the LiteLLM user owning the key). Empty: none.
    user: Tuple[str, ...] = ("end_user",)
    #: Send LiteLLM's `custom_llm_provider` as `provider` (when the model group has one).
    send_provider: bool = True
    #: Completion tokens to reserve when the request sets no `max_tokens`.
    default_completion_tokens: int = 256
    #: Dollars to reserve when the model cost map has no price for the model.
    default_cost: float = 0.0
    #: Attempts of one usage report (503 and transport errors are retried).
    usage_attempts: int = 5
    #: Put the check's `x-ratelimit-*` headers on successful answers too.
    success_headers: bool = True
    #: A reservation that LiteLLM never reports back on is forgotten after this long
    #: (its estimate stays charged, which errs on the safe side).
    pending_ttl_s: float = 3600.0

    @classmethod
    def load(cls, block: Optional[Mapping[str, Any]] = None, env: Optional[Mapping[str, str]] = None) -> "HookSettings":
        env = os.environ if env is None else env
        block = dict(block or {})
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(block) - set(known))
        if unknown:
            raise ValueError(f"callback_settings.tollgate: unknown key(s) {unknown}; known: {sorted(known)}")
        values: Dict[str, Any] = {}
        for name in known:
            raw: Any = block.get(name)
            source = f"callback_settings.tollgate.{name}"
            if raw is None and f"TOLLGATE_{name.upper()}" in env:
                raw, source = env[f"TOLLGATE_{name.upper()}"], f"TOLLGATE_{name.upper()}"
            if isinstance(raw, str) and raw.startswith("os.environ/"):
                var = raw[len("os.environ/") :]
                if var not in env:
                    raise ValueError(f"{source}: environment variable {var} is not set")
                raw = env[var]
            if raw is not None:
                values[name] = _convert(name, raw, source, getattr(cls, name))
        settings = cls(**values)
        settings._validate()
        return settings

    def _validate(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"tollgate url must be http(s)://…, got {self.url!r}")
        if self.model not in MODEL_SOURCES:
            raise ValueError(f"tollgate model must be one of {MODEL_SOURCES}, got {self.model!r}")
        for name, allowed in (("virtual_key", VIRTUAL_KEY_SOURCES), ("user", USER_SOURCES)):
            bad = [s for s in getattr(self, name) if s not in allowed]
            if bad:
                raise ValueError(f"tollgate {name}: unknown source(s) {bad}; choose from {allowed} (or none)")
        if self.timeout_ms <= 0 or self.usage_attempts < 1 or self.default_completion_tokens < 0:
            raise ValueError("tollgate timeout_ms must be > 0, usage_attempts ≥ 1, default_completion_tokens ≥ 0")
        if self.default_cost < 0 or self.pending_ttl_s <= 0:
            raise ValueError("tollgate default_cost must be ≥ 0 and pending_ttl_s > 0")


def _convert(name: str, raw: Any, source: str, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise ValueError("expected true or false")
        if isinstance(default, tuple):
            items = raw if isinstance(raw, (list, tuple)) else str(raw).split(",")
            parts = tuple(str(item).strip() for item in items if str(item).strip())
            return () if parts == ("none",) else parts
        if isinstance(default, int):
            if isinstance(raw, float) and not raw.is_integer():
                raise ValueError("expected a whole number")
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        return str(raw)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{source}: bad value {raw!r} for {name}: {e}") from None
