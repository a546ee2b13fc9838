"""Learning without forgetting for the embedding trainer: an anchor to the base model's embeddings.

Fine-tuning on a user's domain moves every embedding, including those of text unlike the domain, and that drift is
what the forgetting guard later measures on its general check set. :class:`AnchoredLoss` adds a penalty for the
drift itself while training: ``weight x mean(1 - cos(student(t), base(t)))`` over the texts ``t`` of the batch's
passage columns (or all of its columns), where ``base`` is a frozen copy of the model training started from
(Li & Hoiem's "learning without forgetting", with the old model's outputs as targets). The ranking loss inside is
any sentence-transformers loss with ``compute_loss_from_embeddings`` (MNRL, MarginMSE, DistillKLDiv), so the
student embeds each batch once.

Set by ``EmbeddingTrainConfig.anchor_weight`` (``--anchor-weight``; 2 in the default recipe, 0 = off) and
``anchor_texts``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, get_args

import torch
from torch import Tensor, nn

from ragtune.config import AnchorTexts

ANCHOR_TEXTS = get_args(AnchorTexts)


class AnchoredLoss(nn.Module):
    """``loss`` plus ``weight`` x the mean cosine distance of the anchored columns' embeddings from ``base``'s.

    ``base`` is held outside the module tree: it is not trained, saved, put in training mode or handed to the
    optimiser; it follows the student's device on the first batch. The forward pass returns the two parts as a
    dict (``ranking``, ``anchor``), which the sentence-transformers trainer sums and logs one by one.
    """

    def __init__(self, model: nn.Module, loss: nn.Module, base: nn.Module, weight: float,
                 texts: AnchorTexts = "passages") -> None:
        super().__init__()
        if not hasattr(loss, "compute_loss_from_embeddings"):
            raise TypeError(f"{type(loss).__name__} cannot take precomputed embeddings, so it cannot be anchored")
        if texts not in ANCHOR_TEXTS:
            raise ValueError(f"texts={texts!r}: use one of {', '.join(ANCHOR_TEXTS)}")
        self.model = model
        self.loss = loss
        self.weight = float(weight)
        self.texts = texts
        object.__setattr__(self, "_base", base.eval().requires_grad_(False))

    def forward(self, sentence_features: Iterable[dict[str, Any]], labels: Tensor | None) -> dict[str, Tensor]:
        from sentence_transformers.base.losses.merged_forward import embed_columns

        features = list(sentence_features)
        first = 1 if self.texts == "passages" else 0
        # the base sees copies taken before the student runs: a forward pass adds its outputs to the dicts
        anchored = [dict(f) for f in features[first:]]
        embeddings = embed_columns(self.model, features)
        device = embeddings[0].device
        if next(self._base.parameters()).device != device:
            self._base.to(device)
        with torch.no_grad():
            targets = embed_columns(self._base, anchored, separate_first=self.texts == "all")
        drift = torch.stack([(1 - nn.functional.cosine_similarity(e, t.to(e.dtype), dim=-1)).mean()
                             for e, t in zip(embeddings[first:], targets, strict=True)]).mean()
        return {"ranking": self.loss.compute_loss_from_embeddings(embeddings, labels), "anchor": self.weight * drift}

    def get_config_dict(self) -> dict[str, Any]:
        inner = getattr(self.loss, "get_config_dict", dict)()
        return {"loss": type(self.loss).__name__, **inner, "anchor_weight": self.weight, "anchor_texts": self.texts}


def anchored(model: nn.Module, loss: nn.Module, base_path: str, weight: float,
             texts: AnchorTexts) -> AnchoredLoss:
    """Wrap ``loss`` in :class:`AnchoredLoss` with a frozen copy of the model at ``base_path`` (a resolved base
    directory or name, loaded like the student)."""
    from ragtune.models import load_sentence_transformer

    base = load_sentence_transformer(base_path, device="cpu")
    base.max_seq_length = getattr(model, "max_seq_length", base.max_seq_length)
    return AnchoredLoss(model, loss, base, weight, texts)
