"""Adapter kinds registered under names, so a config or ``--kind NAME`` picks one without code (the thinc habit).

Built-in: ``linear.v1`` (alias ``linear``) and ``mlp.v1`` (alias ``mlp``). A custom adapter is any
:class:`~ragtune.adapters.modules.Adapter` subclass registered with :func:`register_adapter`::

    @register_adapter("scaled.v1")
    class Scaled(Adapter):
        def __init__(self, dim: int, init: float = 1.0):
            super().__init__(dim, init=init)
            self.scale = torch.nn.Parameter(torch.tensor(init))

        def forward(self, x):
            return x * self.scale

Loading a saved custom adapter needs the module that registers it to be imported first (ragtune never imports
code named by a file it reads).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ragtune.errors import ConfigError

if TYPE_CHECKING:
    from ragtune.adapters.modules import Adapter

logger = logging.getLogger(__name__)

_REGISTRY: dict[str, type[Adapter]] = {}
_ALIASES: dict[str, str] = {}


def register_adapter(name: str, *, aliases: tuple[str, ...] = (), overwrite: bool = False
                     ) -> Callable[[type[Adapter]], type[Adapter]]:
    """Class decorator: make an :class:`Adapter` subclass buildable as ``kind=name`` (or any of ``aliases``)."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"register_adapter(name={name!r}): give a non-empty name such as 'myadapter.v1'")

    def decorator(cls: type[Adapter]) -> type[Adapter]:
        from ragtune.adapters.modules import Adapter

        if not (isinstance(cls, type) and issubclass(cls, Adapter)):
            raise ConfigError(f"register_adapter({name!r}): {cls!r} must subclass ragtune.adapters.Adapter")
        for key in (name, *aliases):
            known = _REGISTRY.get(key) or _REGISTRY.get(_ALIASES.get(key, ""))
            if known is not None and known is not cls and not overwrite:
                raise ConfigError(f"adapter kind {key!r} is already registered by {known.__module__}."
                                  f"{known.__qualname__}; pick another name or pass overwrite=True")
        _REGISTRY[name] = cls
        for alias in aliases:
            _ALIASES[alias] = name
        cls.kind = name
        return cls

    return decorator


def canonical_kind(kind: str) -> str:
    """``"linear"`` -> ``"linear.v1"``; a registered full name passes through; anything else is an error."""
    _ensure_builtins()
    key = str(kind).strip()
    if key in _REGISTRY:
        return key
    if key in _ALIASES:
        return _ALIASES[key]
    raise ConfigError(f"adapter kind {kind!r} is not registered. Known kinds: {', '.join(available_adapters())}. "
                      "A custom kind must be registered with @ragtune.adapters.register_adapter('NAME') in a "
                      "module imported before training or loading.")


def get_adapter_class(kind: str) -> type[Adapter]:
    return _REGISTRY[canonical_kind(kind)]


def available_adapters() -> list[str]:
    _ensure_builtins()
    return sorted(set(_REGISTRY) | set(_ALIASES))


def build_adapter(kind: str, dim: int, **params: Any) -> Adapter:
    """Instantiate the adapter ``kind`` for ``dim``-dimensional embeddings; bad ``params`` name the kind."""
    cls = get_adapter_class(kind)
    if not isinstance(dim, int) or dim < 1:
        raise ConfigError(f"adapter dim={dim!r}: must be a positive integer (the embedding dimension)")
    try:
        return cls(dim, **params)
    except TypeError as exc:
        raise ConfigError(f"adapter kind {kind!r} does not accept parameters {sorted(params)}: {exc}") from exc


def _ensure_builtins() -> None:
    import ragtune.adapters.modules  # noqa: F401  (registers linear.v1 and mlp.v1)
