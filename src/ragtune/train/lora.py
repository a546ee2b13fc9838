"""LoRA for the embedding trainer (``EmbeddingTrainConfig.lora_rank``, ``--lora-rank N``).

:func:`add_lora` puts peft's low-rank adapters on the encoder's linear layers and freezes everything else, so
training changes each of those weights only by a rank-``r`` product ``B @ A``. :func:`merged_copy` folds the
adapters back into plain weights: every model ragtune writes (the best checkpoint, the final model) is an ordinary
sentence-transformers directory that loads without peft, and the forgetting guard mixes it like any other.

The adapters are injected with :func:`peft.inject_adapter_in_model` into the Hugging Face model inside the first
module, not through transformers' own peft integration, which asks for a newer peft than PyPI may offer.
Trainer checkpoints keep the adapter weights under peft's names; :func:`load_lora_checkpoint` restores them when a
run resumes.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from ragtune.errors import ConfigError

__all__ = ["add_lora", "has_lora", "load_lora_checkpoint", "lora_trainer_class", "merged_copy", "save_plain"]


def _peft():
    try:
        import peft
    except ImportError as exc:
        raise ConfigError("lora_rank needs peft: pip install 'ragtune[lora]' (or set lora_rank: null / drop "
                          "--lora-rank to train every weight)") from exc
    return peft


def _encoder(model: Any) -> Any:
    hf = getattr(model[0], "auto_model", None) if len(model) else None
    if hf is None:
        raise ConfigError(f"lora_rank: the model's first module ({type(model[0]).__name__ if len(model) else 'none'}) "
                          "holds no transformers model to put adapters on; use a sentence-transformers model whose "
                          "first module is a Transformer, or set lora_rank: null")
    return hf


def _linear_names(hf: Any) -> list[str]:
    """Full names of the encoder's linear layers, without the pooler (sentence-transformers pools itself)."""
    import torch

    names = [name for name, m in hf.named_modules()
             if isinstance(m, torch.nn.Linear) and name.split(".")[0] != "pooler"]
    if not names:
        raise ConfigError("lora_rank: the encoder has no linear layers to adapt; set lora_rank: null")
    return names


def add_lora(model: Any, rank: int, alpha: float | None = None, dropout: float = 0.0,
             targets: list[str] | None = None) -> int:
    """Inject LoRA adapters of rank ``rank`` (scale ``alpha / rank``; ``alpha`` defaults to ``2 * rank``) into
    ``targets`` (module names or name suffixes; default: every linear layer of the encoder) and make them the only
    trainable weights. Returns the number of trainable parameters."""
    peft = _peft()
    hf = _encoder(model)
    config = peft.LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else 2 * rank, lora_dropout=dropout,
                             target_modules=list(targets) if targets else _linear_names(hf), bias="none")
    try:
        peft.inject_adapter_in_model(config, hf)
    except ValueError as exc:  # peft: "Target modules ... not found in the base model"
        raise ConfigError(f"lora_targets {targets!r}: {exc}. Name linear layers of the encoder (e.g. query, "
                          "value), or leave lora_targets unset for all of them") from exc
    for name, param in model.named_parameters():
        param.requires_grad_("lora_" in name)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def has_lora(model: Any) -> bool:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return any(isinstance(m, BaseTunerLayer) for m in model.modules())


def merged_copy(model: Any) -> Any:
    """A copy of ``model`` with every adapter merged into its layer's weight and the plain layers put back."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    clone = copy.deepcopy(model)
    hf = _encoder(clone)
    for name, module in list(hf.named_modules()):
        if isinstance(module, BaseTunerLayer):
            module.merge()
            parent, _, child = name.rpartition(".")
            setattr(hf.get_submodule(parent) if parent else hf, child, module.get_base_layer())
    for param in clone.parameters():
        param.requires_grad_(True)
    return clone


def save_plain(model: Any, path: str | Path) -> None:
    """``model.save(path)``, with any LoRA adapters merged first."""
    (merged_copy(model) if _has_peft() and has_lora(model) else model).save(str(path))


def _has_peft() -> bool:
    try:
        import peft  # noqa: F401
    except ImportError:
        return False
    return True


def load_lora_checkpoint(model: Any, checkpoint: str | Path) -> None:
    """Restore a trainer checkpoint of a LoRA run (the encoder's weights under peft's names) into ``model``, which
    must carry the same adapters."""
    from safetensors.torch import load_file

    files = sorted(Path(checkpoint).glob("*.safetensors"))
    if not files:
        raise ConfigError(f"checkpoint {checkpoint} holds no .safetensors weights; delete it to start afresh")
    state: dict[str, Any] = {}
    for f in files:
        state.update(load_file(str(f)))
    fix = "delete the output directory's checkpoints/ to start afresh"
    try:
        missing, unexpected = _encoder(model).load_state_dict(state, strict=False)
    except RuntimeError as exc:  # e.g. adapters of another rank: size mismatch
        first = next((line.strip() for line in str(exc).splitlines()[1:] if line.strip()), str(exc))
        raise ConfigError(f"checkpoint {checkpoint} does not match this LoRA configuration ({first}); {fix}") from exc
    lost = [k for k in missing if "lora_" in k]
    if lost or unexpected:
        raise ConfigError(f"checkpoint {checkpoint} does not match this LoRA configuration ({len(lost)} adapter "
                          f"weights missing, {len(unexpected)} unexpected, first: {(lost or unexpected)[0]}); {fix}")


def lora_trainer_class() -> type:
    """sentence-transformers' trainer, resuming a LoRA run from its checkpoint with :func:`load_lora_checkpoint`
    (a plain load of the checkpoint directory would not match peft's weight names)."""
    from sentence_transformers import SentenceTransformerTrainer

    class LoraTrainer(SentenceTransformerTrainer):
        def _load_from_checkpoint(self, checkpoint_path: str, *args: Any, **kwargs: Any) -> None:
            load_lora_checkpoint(getattr(self.model, "_orig_mod", self.model), checkpoint_path)

    return LoraTrainer
