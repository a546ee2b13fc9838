"""Adapters on a frozen encoder: a small map on the query side (or both sides) trained on cached embeddings.

Names are re-exported lazily, so ``import ragtune.adapters`` stays cheap until one is used.

- :func:`train_adapter` / :class:`AdapterConfig`: embed once through the cache, train in seconds, export.
- :class:`LinearAdapter` (``linear``), :class:`MLPAdapter` (``mlp``), :func:`register_adapter` for custom kinds.
- :class:`SentenceTransformerEncoder`, :class:`EndpointEncoder` (any OpenAI-compatible ``/v1/embeddings``).
- :class:`EmbeddingCache`: SQLite, keyed by (encoder, side, text hash), durable batch by batch.
- :class:`AdaptedEncoder`: the deployable wrapper; :class:`AdapterSystem`: the ``adapter:DIR`` retrieval system.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Adapter": "ragtune.adapters.modules",
    "LinearAdapter": "ragtune.adapters.modules",
    "MLPAdapter": "ragtune.adapters.modules",
    "load_adapter": "ragtune.adapters.modules",
    "save_adapter": "ragtune.adapters.modules",
    "available_adapters": "ragtune.adapters.registry",
    "build_adapter": "ragtune.adapters.registry",
    "register_adapter": "ragtune.adapters.registry",
    "EmbeddingCache": "ragtune.adapters.cache",
    "default_cache_path": "ragtune.adapters.cache",
    "Encoder": "ragtune.adapters.encoders",
    "EndpointEncoder": "ragtune.adapters.encoders",
    "EndpointError": "ragtune.adapters.encoders",
    "SentenceTransformerEncoder": "ragtune.adapters.encoders",
    "embed_texts": "ragtune.adapters.encoders",
    "AdapterConfig": "ragtune.adapters.config",
    "fit_adapter": "ragtune.adapters.fit",
    "mine_negatives": "ragtune.adapters.fit",
    "AdapterTrainResult": "ragtune.adapters.train",
    "make_encoder": "ragtune.adapters.train",
    "train_adapter": "ragtune.adapters.train",
    "AdaptedEncoder": "ragtune.adapters.export",
    "AdapterModule": "ragtune.adapters.export",
    "export_sentence_transformer": "ragtune.adapters.export",
    "AdapterSystem": "ragtune.adapters.system",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ragtune.adapters' has no attribute {name!r}")
