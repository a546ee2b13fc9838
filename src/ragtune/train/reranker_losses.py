"""Listwise losses of the reranker trainer (``RerankerTrainConfig.loss``: lce, listnet, lambda), from
sentence-transformers; ``bce`` is built in :func:`ragtune.train.reranker.train_reranker`, which knows the class
balance it weighs."""

from __future__ import annotations

from typing import Any


def listwise_loss(name: str, model: Any, whole_batch: bool) -> Any:
    """The listwise loss ``name`` (lce, listnet or lambda). ``whole_batch`` scores all (query, passage) pairs of a
    batch in one forward pass (``mini_batch_size=-1``; 0 would read as unset); otherwise they go through in chunks of
    as many pairs as the batch has queries (sentence-transformers' default: 8 chunks of 4 pairs for 4 queries x 8
    passages). The loss is the same either way, and so is the memory, since every chunk's activations are kept for
    the backward pass. Chunks leave a GPU mostly idle, so ``train_reranker`` asks for the whole batch there. A CPU
    keeps the chunks: on 2 cores, ms-marco-MiniLM-L-12, 4 queries x 8 passages, whole ``train_reranker`` steps took
    13.7-14.9 s against 11.1-11.6 s in chunks, although the bare step of ``bench/listwise_chunks.py`` went the other
    way (9.1 s against 11.3 s); see bench/RESULTS.md."""
    from sentence_transformers.cross_encoder.losses import LambdaLoss, ListNetLoss

    chunk = -1 if whole_batch else None
    if name == "lce":
        return lce_loss(model, chunk)
    if name == "listnet":
        return ListNetLoss(model, mini_batch_size=chunk)
    return LambdaLoss(model, mini_batch_size=chunk)


def lce_loss(model: Any, mini_batch_size: int | None = None) -> Any:
    """Localized contrastive estimation (Gao, Dai & Callan, ECIR 2021): per query, the softmax cross-entropy of its
    positive(s) against its hard negatives, i.e. ListNet with a one-hot target.

    sentence-transformers' ListNetLoss takes ``softmax(labels)`` as the target, which for binary labels is nearly
    uniform (1 positive, 7 negatives: 0.28 vs 0.10 each). Fitting that flattens a trained reranker's scores: the
    loss is lowest when the positive is just one logit above every negative. Here a positive's label becomes 0 and
    a negative's -inf, so the target puts all its mass on the positives.
    """
    import torch
    from sentence_transformers.cross_encoder.losses import ListNetLoss

    class LCELoss(ListNetLoss):
        def forward(self, inputs: Any, labels: Any, *args: Any, **kwargs: Any) -> Any:
            hard = [torch.where(torch.as_tensor(lbl) > 0, 0.0, float("-inf")) for lbl in labels]
            return super().forward(inputs, hard, *args, **kwargs)

    return LCELoss(model, mini_batch_size=mini_batch_size)
