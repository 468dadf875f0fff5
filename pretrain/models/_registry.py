"""The one encoder registry (timm's `register_model` / `create_model` pattern).

    @register_encoder("tiny")
    def tiny(**kwargs) -> Encoder: ...

    enc = build_encoder("tiny", width=8)

Every registered builder returns an `Encoder` (see `cebench.pretrain.models.base`), so every transfer
harness accepts every encoder.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cebench.core.errors import ConfigError

_ENCODERS: dict[str, Callable[..., Any]] = {}


def register_encoder(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator that registers an encoder builder under `name`; a duplicate name is an error."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in _ENCODERS:
            raise ValueError(f"encoder '{name}' is already registered")
        _ENCODERS[name] = fn
        return fn

    return deco


def list_encoders() -> list[str]:
    return sorted(_ENCODERS)


def build_encoder(name: str, **kwargs: Any):
    """Build a registered encoder; unknown names and keyword arguments are clear errors."""
    if name not in _ENCODERS:
        raise ConfigError(
            f"unknown encoder '{name}'; registered encoders: {', '.join(list_encoders())}"
        )
    try:
        return _ENCODERS[name](**kwargs)
    except TypeError as e:
        raise ConfigError(f"encoder '{name}': bad arguments {kwargs}: {e}") from None
