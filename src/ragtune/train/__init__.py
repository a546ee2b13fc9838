"""Training: one module per trained artifact (``embedding``, ``reranker``; adapters live in ``ragtune.adapters``),
with the embedding trainer's pairs (``pairs``), losses (``losses``) and per-layer training (``layers``) in modules of
their own, the reranker's training examples (``reranker_examples``), the progress callback both trainers share
(``progress``), and the forgetting guard (``guard``) with the weight mixes it tries (``mixing``).

Names are re-exported lazily, so ``import ragtune.train`` stays cheap until a trainer is actually used.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "NoSharedPositiveBatchSampler": "ragtune.train.sampler",
    "Pair": "ragtune.train.pairs",
    "TrainResult": "ragtune.train.embedding",
    "LOSSES": "ragtune.train.losses",
    "build_loss": "ragtune.train.losses",
    "build_pairs": "ragtune.train.pairs",
    "load_pairs": "ragtune.train.pairs",
    "passage_text": "ragtune.train.pairs",
    "train_embedding": "ragtune.train.embedding",
    "RerankerTrainConfig": "ragtune.train.reranker",
    "RerankerTrainResult": "ragtune.train.reranker",
    "train_reranker": "ragtune.train.reranker",
    "GuardConfig": "ragtune.train.guard",
    "GuardResult": "ragtune.train.guard",
    "guard_model": "ragtune.train.guard",
    "interpolate_weights": "ragtune.train.mixing",
    "mix_lower_layers": "ragtune.train.mixing",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ragtune.train' has no attribute {name!r}")
