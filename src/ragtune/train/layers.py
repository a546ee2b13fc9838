"""Which layers of an encoder train, and how fast: the embedding trainer's ``freeze_upper_layers``,
``freeze_modules`` and ``layer_lr_decay`` (:class:`~ragtune.config.EmbeddingTrainConfig`).

Layers are numbered from the weight names by :func:`ragtune.train.mixing.layer_depths` (0 for the embeddings,
``i + 1`` for transformer layer ``i``, ``L + 1`` for the heads above the last layer), as the guard's layer mixes
number them. On SciFact, what fine-tuning cost general retrieval sat mostly in the upper layers, and there mostly
in the attention weights (bench/RESULTS.md); ``freeze_modules=["attn@-3"]`` (the default recipe) keeps those of the
top three layers as the base has them while the rest of the network trains around them.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from ragtune.errors import ConfigError
from ragtune.train.mixing import count_layers, layer_depths, layer_of, parse_module_spec, sublayer_kind

logger = logging.getLogger(__name__)


def _depths(model: Any) -> dict[str, int]:
    return layer_depths(name for name, _ in model.named_parameters())


def freeze_upper_layers(model: Any, n: int) -> int:
    """Set ``requires_grad = False`` on the top ``n`` transformer layers of ``model`` and on everything above them
    (final norms, pooler, dense heads), so training leaves them as they are. Returns how many tensors were frozen.
    """
    n_layers = count_layers(model)
    if n_layers < 2:
        raise ConfigError(f"freeze_upper_layers={n}: found {n_layers} numbered transformer layers in the model's "
                          "weights (encoder.layer.N., layers.N. ...), so none can be frozen; set it to 0")
    if not 0 < n < n_layers:
        raise ConfigError(f"freeze_upper_layers={n}: the model has {n_layers} transformer layers; freeze between "
                          f"1 and {n_layers - 1} of them (0 = train all)")
    depths, frozen = _depths(model), 0
    for name, param in model.named_parameters():
        if depths[name] > n_layers - n and param.requires_grad:
            param.requires_grad_(False)
            frozen += 1
    return frozen


def freeze_modules(model: Any, specs: list[str], *, strict: bool = True) -> int:
    """Set ``requires_grad = False`` on every weight of sub-layer kind ``KIND`` (attention, feed-forward, layer
    norms: :func:`ragtune.train.mixing.sublayer_kind`) in transformer layers ``K`` and up, for each ``KIND@K`` in
    ``specs`` (a negative ``K`` counts from the top: ``attn@-3`` is the top three layers, or every layer of a
    smaller model). Returns how many tensors were frozen. A spec that matches no weight raises ConfigError, or with
    ``strict=False`` (the default recipe's spec) is left out with a warning."""
    n_layers = count_layers(model)
    frozen = 0
    for spec in specs:
        kind, k = parse_module_spec(spec)
        first = max(0, n_layers + k) if k < 0 else k
        if first >= n_layers and strict:
            raise ConfigError(f"freeze_modules {spec!r}: the model has {n_layers} transformer layers; K must be "
                              f"between 0 and {n_layers - 1} (or negative, counted from the top)")
        hits = [p for name, p in model.named_parameters() if sublayer_kind(name) == kind and layer_of(name) >= first]
        if not hits and strict:
            raise ConfigError(f"freeze_modules {spec!r}: no weight of the model is recognised as {kind!r} (its names "
                              "do not follow the BERT or Llama naming); use freeze_upper_layers instead")
        if not hits:
            logger.warning("freeze_modules %r: no %s weight of this model is recognised (its names follow neither "
                           "the BERT nor the Llama naming), so every weight trains", spec, kind)
        for param in hits:
            frozen += param.requires_grad
            param.requires_grad_(False)
    return frozen


def layer_learning_rates(model: Any, learning_rate: float, decay: float) -> dict[str, float]:
    """sentence-transformers' ``learning_rate_mapping`` (name pattern -> rate) that trains a parameter at depth
    ``d`` at ``learning_rate * decay ** d``. The embeddings (depth 0) keep ``learning_rate`` and need no pattern;
    frozen parameters are left out. The patterns match the names with any prefix (the trainer sees them through
    the loss module)."""
    depths = _depths(model)
    by_depth: dict[int, list[str]] = {}
    for name, param in model.named_parameters():
        if depths[name] > 0 and param.requires_grad:
            by_depth.setdefault(depths[name], []).append(re.escape(name))
    return {f"(?:^|\\.)(?:{'|'.join(names)})$": learning_rate * decay ** depth
            for depth, names in sorted(by_depth.items())}


__all__ = ["freeze_modules", "freeze_upper_layers", "layer_learning_rates"]
