"""Weight mixes of a fine-tuned model with its base, which the forgetting guard (:mod:`ragtune.train.guard`) tries.

- :func:`interpolate_weights`: ``alpha * finetuned + (1 - alpha) * base`` for every float weight;
- :func:`mix_lower_layers`: the fine-tuned embeddings and lowest ``k`` transformer layers under the base model's
  upper layers (layers found by :func:`count_layers` from the state-dict keys: ``encoder.layer.N.``,
  ``layers.N.`` ...);
- :func:`sparse_mix`: the base plus only the largest share of each weight's change (the "trim" step of
  TIES-merging, Yadav et al. 2023), the rest of the change reset to the base;
- :func:`module_mix`: the fine-tuned model with the base's weights of one kind of sub-layer (attention or
  feed-forward, :data:`SUBLAYER_KINDS`) in the layers from ``k`` up;
- :func:`take_weights`: any per-key choice between the two.

Both models must share one architecture (a :class:`~ragtune.errors.ConfigError` says what differs otherwise); the
modules' configuration (tokenizer, pooling, prompts) is taken from the fine-tuned model.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ragtune._io import atomic_dir
from ragtune.errors import ConfigError


def _name(model: Any) -> str:
    return str(model) if isinstance(model, str | Path) else type(model).__name__


def _load(model: Any, device: str | None = None):
    if isinstance(model, str | Path):
        from ragtune.models import load_sentence_transformer

        return load_sentence_transformer(model, device=device)
    return model


def _check_same_architecture(base_sd: dict, ft_sd: dict, base_name: str, ft_name: str) -> None:
    only_base = sorted(set(base_sd) - set(ft_sd))
    only_ft = sorted(set(ft_sd) - set(base_sd))
    shapes = [k for k in base_sd if k in ft_sd and tuple(base_sd[k].shape) != tuple(ft_sd[k].shape)]
    if not (only_base or only_ft or shapes):
        return
    details = []
    if only_base:
        details.append(f"{len(only_base)} weights only in the base (first: {only_base[0]})")
    if only_ft:
        details.append(f"{len(only_ft)} weights only in the fine-tuned model (first: {only_ft[0]})")
    if shapes:
        k = shapes[0]
        details.append(f"{len(shapes)} weights of different shape (first: {k} {tuple(base_sd[k].shape)} vs "
                       f"{tuple(ft_sd[k].shape)})")
    raise ConfigError(f"cannot interpolate base={base_name!r} and finetuned={ft_name!r}: they have different "
                      f"architectures ({'; '.join(details)}). Weight interpolation needs the fine-tuned model to be "
                      "trained from this base: pass the base it was fine-tuned from, or set the guard's alphas: [].")


def _per_weight(base_model, ft_model, combine: Callable, names: tuple[str, str]):
    """A new SentenceTransformer with ``combine(finetuned, base)`` for every float weight; non-float tensors (e.g.
    integer position ids) are taken from the fine-tuned model."""
    import torch

    base_sd, ft_sd = base_model.state_dict(), ft_model.state_dict()
    _check_same_architecture(base_sd, ft_sd, *names)
    with torch.no_grad():
        mixed = {key: combine(ft_t, base_sd[key].to(ft_t.device)) if torch.is_floating_point(ft_t) else ft_t.clone()
                 for key, ft_t in ft_sd.items()}
    model = copy.deepcopy(ft_model)
    model.load_state_dict(mixed)
    return model


def _mix(base_model, ft_model, alpha: float, names: tuple[str, str] = ("base", "finetuned")):
    """A new SentenceTransformer with ``alpha * finetuned + (1 - alpha) * base`` for every float weight.

    Non-float tensors (e.g. integer position ids) are taken from the fine-tuned model.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha={alpha!r}: must be between 0 (the base) and 1 (the fine-tuned model)")
    return _per_weight(base_model, ft_model,
                       lambda f, b: (alpha * f.float() + (1.0 - alpha) * b.float()).to(f.dtype), names)


_LAYER_KEY = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)\.")


def layer_of(key: str) -> int | None:
    """The transformer layer a state-dict key belongs to (``...encoder.layer.3.attention...`` -> 3), or None."""
    match = _LAYER_KEY.search(key)
    return int(match.group(1)) if match else None


def count_layers(model) -> int:
    """How many numbered transformer layers the weights of ``model`` hold (``encoder.layer.N.``, ``layers.N.`` ...;
    0 when none are found)."""
    found = {layer_of(k) for k in model.state_dict()} - {None}
    return max(found) + 1 if found else 0


def layer_depths(keys) -> dict[str, int]:
    """Depth of each weight name in the stack: 0 for what sits below the first numbered layer (the embeddings),
    ``i + 1`` for layer ``i``, and ``L + 1`` for what comes after the last layer (final norms, pooler, dense
    heads). ``keys`` are state-dict or parameter names in model order."""
    keys = list(keys)
    n = max((layer for layer in map(layer_of, keys) if layer is not None), default=-1) + 1
    depths, seen_layer = {}, False
    for key in keys:  # models list the embeddings first, then the layers, then the heads
        layer = layer_of(key)
        seen_layer = seen_layer or layer is not None
        depths[key] = layer + 1 if layer is not None else (n + 1 if seen_layer else 0)
    return depths


def top_changed_depth(base_model, ft_model) -> int:
    """The highest :func:`layer_depths` depth at which the fine-tuned weights differ from the base's (-1: none
    differ). A layer mix of ``k`` layers with ``k`` at or above it is the fine-tuned model itself, as after training
    with frozen upper layers."""
    import torch

    base_sd, ft_sd = base_model.state_dict(), ft_model.state_dict()
    depths = layer_depths(ft_sd)
    return max((depths[key] for key, t in ft_sd.items()
                if key not in base_sd or not torch.equal(t, base_sd[key].to(t.device))), default=-1)


def _mix_lower_layers(base_model, ft_model, k: int, names: tuple[str, str] = ("base", "finetuned")):
    """A new SentenceTransformer with the fine-tuned weights below layer ``k`` (the embeddings and layers
    ``0 … k-1``) and the base weights from layer ``k`` up (upper layers, final norms, pooler, dense heads)."""
    base_sd, ft_sd = base_model.state_dict(), ft_model.state_dict()
    _check_same_architecture(base_sd, ft_sd, *names)
    n = count_layers(ft_model)
    if not 0 < k < n:
        raise ConfigError(f"lower layers k={k}: must be between 1 and {n - 1} (the model has {n} layers)")
    depths = layer_depths(ft_sd)
    return take_weights(base_model, ft_model, lambda key: depths[key] <= k, names)


def take_weights(base_model, ft_model, from_finetuned: Callable[[str], bool],
                 names: tuple[str, str] = ("base", "finetuned")):
    """A new SentenceTransformer with the fine-tuned weights whose state-dict key ``from_finetuned`` accepts and
    the base weights elsewhere (both models left unchanged)."""
    base_sd, ft_sd = base_model.state_dict(), ft_model.state_dict()
    _check_same_architecture(base_sd, ft_sd, *names)
    mixed = {key: (ft_t if from_finetuned(key) else base_sd[key].to(ft_t.device)).clone()
             for key, ft_t in ft_sd.items()}
    model = copy.deepcopy(ft_model)
    model.load_state_dict(mixed)
    return model


# what each kind of sub-layer is called in BERT-style (``attention.self.query``, ``intermediate.dense``,
# ``output.dense``), GPT/Llama-style (``self_attn``, ``mlp``) and other common encoders (``attn``, ``ffn``,
# ``fc1``/``fc2``); a layer's norms are their own kind, so that an attention or feed-forward mix leaves them alone
_NORM = re.compile(r"norm|\.ln_?\d*\.", re.IGNORECASE)
_ATTENTION = re.compile(r"\.(attention|self_attn|attn|self_attention)\.")
_FEED_FORWARD = re.compile(r"\.(intermediate|output\.dense|mlp|ffn|feed_forward|fc1|fc2)\.")
SUBLAYER_KINDS = ("attn", "ffn", "norm")


def sublayer_kind(key: str) -> str | None:
    """``"attn"``, ``"ffn"`` or ``"norm"`` for a weight inside a transformer layer's attention block, feed-forward
    block or layer norms; None outside the layers (embeddings, heads) or for a name not recognised."""
    if layer_of(key) is None:
        return None
    if _NORM.search(key):
        return "norm"
    if _ATTENTION.search(key):
        return "attn"
    return "ffn" if _FEED_FORWARD.search(key) else None


def parse_module_spec(spec: str) -> tuple[str, int]:
    """``"attn@3"`` -> ``("attn", 3)``, ``"attn@-3"`` -> ``("attn", -3)`` (the top three layers); a ValueError
    naming the spec and the expected form otherwise."""
    kind, _, k = str(spec).partition("@")
    if kind not in SUBLAYER_KINDS or not k.removeprefix("-").isdigit() or k == "-0":
        raise ValueError(f"sub-layer spec {spec!r}: write KIND@K with KIND one of {', '.join(SUBLAYER_KINDS)} "
                         "and K the first transformer layer it applies to (0-based, or negative to count from "
                         "the top), e.g. 'attn@3' or 'attn@-3'")
    return kind, int(k)


def _mix_modules(base_model, ft_model, kind: str, k: int, names: tuple[str, str] = ("base", "finetuned")):
    """A new SentenceTransformer: the fine-tuned model with the base's ``kind`` weights (:data:`SUBLAYER_KINDS`)
    in transformer layers ``k`` and up."""
    if kind not in SUBLAYER_KINDS:
        raise ConfigError(f"sub-layer kind {kind!r}: choose one of {', '.join(SUBLAYER_KINDS)}")
    n = count_layers(ft_model)
    if not 0 <= k < n:
        raise ConfigError(f"module mix from layer k={k}: must be between 0 and {n - 1} (the model has {n} layers)")
    found = {sublayer_kind(key) for key in ft_model.state_dict()}
    if kind not in found:
        raise ConfigError(f"module mix {kind!r}: no weight of the model is recognised as {kind!r} (its names do not "
                          "follow the BERT or Llama naming); use the layer mixes instead")
    return take_weights(base_model, ft_model,
                        lambda key: sublayer_kind(key) != kind or layer_of(key) < k, names)


def _sparse_mix(base_model, ft_model, keep: float, names: tuple[str, str] = ("base", "finetuned")):
    """A new SentenceTransformer with, in every float weight, the ``keep`` share of entries that training changed
    most (by absolute change) from the fine-tuned model and all other entries from the base."""
    import torch

    if not 0.0 < keep <= 1.0:
        raise ConfigError(f"keep={keep!r}: the share of each weight's changes to keep must be in (0, 1], e.g. 0.2")

    def trim(f, b):
        change = (f.float() - b.float()).abs()
        n_keep = max(1, round(keep * change.numel()))
        if n_keep >= change.numel():
            return f.clone()
        threshold = torch.kthvalue(change.flatten(), change.numel() - n_keep + 1).values  # the n_keep-th largest
        return torch.where(change >= threshold, f, b).clone()

    return _per_weight(base_model, ft_model, trim, names)


def kept_change(base_model, mixed_model, ft_model) -> float:
    """How much of the fine-tuning change a mix keeps: ``||mixed - base|| / ||finetuned - base||`` over every float
    weight (1.0 for the fine-tuned model, ``alpha`` for a uniform mix, 0.0 for the base; 0.0 when nothing changed)."""
    import torch

    base_sd, mixed_sd, ft_sd = base_model.state_dict(), mixed_model.state_dict(), ft_model.state_dict()
    kept = moved = 0.0
    for key, f in ft_sd.items():
        if torch.is_floating_point(f):
            b = base_sd[key].to(f.device).float()
            kept += float(((mixed_sd[key].to(f.device).float() - b) ** 2).sum())
            moved += float(((f.float() - b) ** 2).sum())
    return (kept / moved) ** 0.5 if moved else 0.0


def _save(model, output_dir: Path) -> Path:
    with atomic_dir(output_dir) as tmp:
        model.save(str(tmp))
    return output_dir


def interpolate_weights(base: Any, finetuned: Any, alpha: float, output_dir: str | Path) -> Path:
    """Write ``alpha * finetuned + (1 - alpha) * base`` (every float weight) as a sentence-transformers dir.

    ``base`` and ``finetuned`` are sentence-transformers directories or names, or loaded ``SentenceTransformer``
    objects (left unchanged).
    ``alpha = 0`` reproduces the base weights, ``alpha = 1`` the fine-tuned ones; both models must share one
    architecture (a :class:`~ragtune.errors.ConfigError` says what differs otherwise). The modules' configuration
    (tokenizer, pooling, prompts) is taken from the fine-tuned model. Returns ``output_dir``.
    """
    base_model, ft_model = _load(base, "cpu"), _load(finetuned, "cpu")
    return _save(_mix(base_model, ft_model, float(alpha), (_name(base), _name(finetuned))), Path(output_dir))


def mix_lower_layers(base: Any, finetuned: Any, k: int, output_dir: str | Path) -> Path:
    """Write the fine-tuned embeddings and transformer layers ``0 … k-1`` under the base model's layers from ``k``
    up (and its pooler and heads) as a sentence-transformers dir; arguments as for :func:`interpolate_weights`."""
    base_model, ft_model = _load(base, "cpu"), _load(finetuned, "cpu")
    return _save(_mix_lower_layers(base_model, ft_model, int(k), (_name(base), _name(finetuned))), Path(output_dir))


def sparse_mix(base: Any, finetuned: Any, keep: float, output_dir: str | Path) -> Path:
    """Write the base model plus the largest ``keep`` share of each weight's fine-tuning change (``keep = 0.2``:
    in every weight tensor, the 20 % of entries that moved most take their fine-tuned values, the rest keep the
    base's) as a sentence-transformers dir; arguments as for :func:`interpolate_weights`."""
    base_model, ft_model = _load(base, "cpu"), _load(finetuned, "cpu")
    return _save(_sparse_mix(base_model, ft_model, float(keep), (_name(base), _name(finetuned))), Path(output_dir))


def module_mix(base: Any, finetuned: Any, kind: str, k: int, output_dir: str | Path) -> Path:
    """Write the fine-tuned model with the base's ``kind`` weights (``"attn"``: query, key, value and attention
    output; ``"ffn"``: the feed-forward pair; ``"norm"``: the layer norms) in transformer layers ``k`` and up, as a sentence-transformers dir;
    arguments as for :func:`interpolate_weights`."""
    base_model, ft_model = _load(base, "cpu"), _load(finetuned, "cpu")
    return _save(_mix_modules(base_model, ft_model, kind, int(k), (_name(base), _name(finetuned))), Path(output_dir))


__all__ = ["SUBLAYER_KINDS", "count_layers", "interpolate_weights", "kept_change", "layer_depths", "layer_of",
           "mix_lower_layers", "module_mix", "parse_module_spec", "sparse_mix", "sublayer_kind", "take_weights",
           "top_changed_depth"]
