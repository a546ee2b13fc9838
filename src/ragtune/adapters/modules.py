"""Adapter modules: small torch maps applied to frozen embeddings, identity (or zero-gated) at the start.

- :class:`LinearAdapter` (``linear.v1``): ``y = x (I + D)^T + b`` with ``D = 0`` and ``b = 0`` at the start; weight
  decay pulls ``D`` back toward the identity, not toward zero.
- :class:`MLPAdapter` (``mlp.v1``): ``y = x + g * (W2 act(W1 x + b1) + b2)`` with the gate ``g = 0`` at the start
  (ReZero-style), so training begins from the base model's behaviour.

Both export to stock ``sentence_transformers`` ``Dense`` modules (:meth:`Adapter.to_st_modules`), so a plain
``SentenceTransformer(path)`` loads them without ragtune and without ``trust_remote_code``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ragtune._io import atomic_open, atomic_write_json
from ragtune.adapters.registry import build_adapter, canonical_kind, register_adapter
from ragtune.errors import ConfigError, DataFormatError

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "adapter.safetensors"
CONFIG_FILE = "adapter_config.json"
FORMAT = "ragtune-adapter"
FORMAT_VERSION = 1

# Activations with act(0) == 0, which the exact Dense export of the MLP needs (see MLPAdapter.to_st_modules).
ACTIVATIONS: dict[str, type[nn.Module]] = {"gelu": nn.GELU, "relu": nn.ReLU, "tanh": nn.Tanh, "silu": nn.SiLU}


class Adapter(nn.Module):
    """Base class: maps ``(n, dim)`` embeddings to ``(n, dim)``. Subclasses pass their JSON-able params up."""

    kind: str = ""

    def __init__(self, dim: int, **params: Any) -> None:
        super().__init__()
        self.dim = int(dim)
        self.params = params

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def to_st_modules(self) -> list[nn.Module] | None:
        """Stock sentence-transformers modules computing the same function, or None (then a custom module
        that needs ragtune and ``trust_remote_code=True`` is exported instead)."""
        return None

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "dim": self.dim, "params": dict(self.params),
                "class": f"{type(self).__module__}.{type(self).__qualname__}"}

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


@register_adapter("linear.v1", aliases=("linear",))
class LinearAdapter(Adapter):
    """``y = x (I + D)^T + b``: a full linear map initialised to the identity."""

    def __init__(self, dim: int, bias: bool = False) -> None:
        super().__init__(dim, bias=bool(bias))
        self.delta = nn.Parameter(torch.zeros(dim, dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def weight(self) -> torch.Tensor:
        return torch.eye(self.dim, dtype=self.delta.dtype, device=self.delta.device) + self.delta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x + x @ self.delta.T
        return y + self.bias if self.bias is not None else y

    def to_st_modules(self) -> list[nn.Module]:
        from sentence_transformers.sentence_transformer.modules import Dense

        with torch.no_grad():
            return [Dense(self.dim, self.dim, bias=self.bias is not None, activation_function=nn.Identity(),
                          init_weight=self.weight().detach().clone(),
                          init_bias=self.bias.detach().clone() if self.bias is not None else None)]


@register_adapter("mlp.v1", aliases=("mlp",))
class MLPAdapter(Adapter):
    """``y = x + g * (W2 act(W1 x + b1) + b2)``, a two-layer MLP on a residual path whose gate ``g`` starts at 0."""

    GATE_SCALE = 10.0

    def __init__(self, dim: int, hidden_dim: int | None = None, activation: str = "gelu") -> None:
        hidden = int(hidden_dim or dim)
        if activation not in ACTIVATIONS:
            raise ConfigError(f"mlp adapter activation={activation!r}: choose one of {', '.join(ACTIVATIONS)}")
        if hidden < 1:
            raise ConfigError(f"mlp adapter hidden_dim={hidden_dim!r}: must be a positive integer")
        super().__init__(dim, hidden_dim=hidden, activation=activation)
        self.hidden_dim = hidden
        self.up = nn.Linear(dim, hidden)
        self.act = ACTIVATIONS[activation]()
        self.down = nn.Linear(hidden, dim)
        self.gate = nn.Parameter(torch.zeros(()))

    def gate_value(self) -> torch.Tensor:
        """The gate ``g``. It is stored divided by ``GATE_SCALE``: Adam moves a parameter by about the learning rate
        per step whatever its gradient, and the layers only learn once ``g`` is off zero, so a raw gate took
        several epochs to open (no validation gain in 2 epochs on SciFact's 809 training claims)."""
        return self.GATE_SCALE * self.gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.gate_value() * self.down(self.act(self.up(x)))

    def to_st_modules(self) -> list[nn.Module]:
        """Two ``Dense`` modules that compute exactly :meth:`forward`.

        ST's ``Dense`` has no "add the input back" across two layers, so the input rides along in the hidden
        layer: the first Dense outputs ``[act(W1 x + b1), x]`` (its extra rows have zero weight, and act(0) = 0,
        plus its residual projection ``[0; I]``), the second maps it with ``[g W2 | I]`` and bias ``g b2``.
        """
        from sentence_transformers.sentence_transformer.modules import Dense

        d, h = self.dim, self.hidden_dim
        with torch.no_grad():
            w1 = torch.cat([self.up.weight, torch.zeros(d, d)], dim=0)
            b1 = torch.cat([self.up.bias, torch.zeros(d)])
            first = Dense(d, h + d, bias=True, activation_function=ACTIVATIONS[self.params["activation"]](),
                          init_weight=w1.clone(), init_bias=b1.clone(), use_residual=True)
            first.residual.weight.copy_(torch.cat([torch.zeros(h, d), torch.eye(d)], dim=0))
            g = self.gate_value()
            w2 = torch.cat([g * self.down.weight, torch.eye(d)], dim=1)
            second = Dense(h + d, d, bias=True, activation_function=nn.Identity(), init_weight=w2.clone(),
                           init_bias=(g * self.down.bias).clone())
        return [first, second]


# --- files ----------------------------------------------------------------------------------------------------


def save_adapter(adapter: Adapter, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``adapter.safetensors`` + ``adapter_config.json`` into the folder ``path`` (each atomically)."""
    from safetensors.torch import save

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in adapter.state_dict().items()}
    with atomic_open(folder / WEIGHTS_FILE, "wb") as fh:
        fh.write(save(tensors, metadata={"format": FORMAT, "kind": adapter.kind}))
    atomic_write_json(folder / CONFIG_FILE, {"format": FORMAT, "format_version": FORMAT_VERSION,
                                             **adapter.describe(), **(extra or {})})
    return folder


def read_adapter_config(path: str | Path) -> dict[str, Any]:
    folder = Path(path)
    cfg_path = folder / CONFIG_FILE
    if not cfg_path.is_file():
        raise DataFormatError(f"adapter {str(path)!r}: no {CONFIG_FILE} in it. Give a folder written by "
                              "`ragtune train adapter --output DIR` (or ragtune.adapters.save_adapter).")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"{cfg_path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise DataFormatError(f"{cfg_path}: not a ragtune adapter config (expected \"format\": \"{FORMAT}\")")
    return cfg


def load_adapter(path: str | Path) -> tuple[Adapter, dict[str, Any]]:
    """Rebuild a saved adapter; returns ``(adapter, config)``. The adapter is in eval mode."""
    from safetensors.torch import load_file

    folder = Path(path)
    cfg = read_adapter_config(folder)
    kind = cfg.get("kind", "")
    try:
        canonical_kind(kind)
    except ConfigError as exc:
        raise ConfigError(f"{folder / CONFIG_FILE}: {exc} (it was defined by {cfg.get('class', '?')})") from None
    adapter = build_adapter(kind, int(cfg["dim"]), **cfg.get("params", {}))
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise DataFormatError(f"adapter {str(path)!r}: {WEIGHTS_FILE} is missing")
    state = load_file(str(weights))
    try:
        adapter.load_state_dict(state)
    except RuntimeError as exc:
        raise DataFormatError(f"{weights}: weights do not fit a {kind} adapter of dim {cfg['dim']}: "
                              f"{' '.join(str(exc).split())[:300]}") from exc
    return adapter.eval(), cfg
