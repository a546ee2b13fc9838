"""Deploying an adapter: inside a sentence-transformers directory, or as a wrapper around any encoder.

**sentence-transformers base** (:func:`export_sentence_transformer`): a directory that plain
``SentenceTransformer(path)`` loads with the adapter inside.

- Query side only (the default): the model is one ``Router`` with a ``query`` route (encoder, Normalize, adapter,
  Normalize) and a ``document`` route (encoder, Normalize) that share the same encoder weights (saved once).
  ``model.encode_query(texts)`` applies the adapter; ``model.encode_document(texts)`` and plain
  ``model.encode(texts)`` (the default route is ``document``) return the base embeddings, so an index built with
  the base model stays valid.
- Both sides: a plain module list (encoder, Normalize, adapter, Normalize); every text is adapted, so the
  document index must be re-embedded.
- ``linear`` and ``mlp`` adapters become stock ``Dense`` modules (no ragtune, no ``trust_remote_code``). A custom
  adapter without ``to_st_modules()`` becomes :class:`AdapterModule`, which needs ragtune installed and, since
  sentence-transformers 6.0 refuses to import module classes outside its own namespace otherwise,
  ``SentenceTransformer(path, trust_remote_code=True)``.

**Any encoder** (:class:`AdaptedEncoder`): ``adapter.safetensors`` + ``adapter_config.json`` (which records the
encoder: endpoint URL and model names, or the ST model) and a small class that embeds through that encoder and
applies the adapter: ``AdaptedEncoder.load(DIR).encode_query(texts)``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sentence_transformers.base.modules import Module

from ragtune._io import atomic_dir
from ragtune.adapters.cache import EmbeddingCache
from ragtune.adapters.encoders import Encoder, Side, embed_texts, encoder_from_description, normalize
from ragtune.adapters.modules import Adapter, load_adapter, save_adapter
from ragtune.errors import ConfigError

logger = logging.getLogger(__name__)


class AdapterModule(Module):
    """A sentence-transformers module around any registered adapter (for kinds without a Dense export)."""

    config_keys: list[str] = []

    def __init__(self, adapter: Adapter) -> None:
        super().__init__()
        self.adapter = adapter

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        features["sentence_embedding"] = self.adapter(features["sentence_embedding"])
        return features

    def get_embedding_dimension(self) -> int:
        return self.adapter.dim

    def save(self, output_path: str, *args: Any, **kwargs: Any) -> None:
        save_adapter(self.adapter, output_path)

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", **kwargs: Any) -> AdapterModule:
        hub = {k: kwargs[k] for k in ("token", "cache_folder", "revision", "local_files_only") if k in kwargs}
        folder = cls.load_dir_path(model_name_or_path, subfolder=subfolder, **hub)
        adapter, _ = load_adapter(folder)
        return cls(adapter)


def adapter_st_modules(adapter: Adapter) -> list[torch.nn.Module]:
    modules = adapter.to_st_modules()
    return list(modules) if modules else [AdapterModule(adapter)]


def export_sentence_transformer(adapter: Adapter, base_model: Any, path: str | Path, side: str = "query") -> Path:
    """Write a sentence-transformers directory at ``path`` with ``adapter`` on the query side (or both sides)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Normalize, Router

    if side not in ("query", "both"):
        raise ConfigError(f"side={side!r}: must be 'query' or 'both'")
    base_modules = list(base_model)
    if any(isinstance(m, Router) for m in base_modules):
        raise ConfigError("the base model already routes queries and documents (a Router, e.g. an adapter "
                          "model): train the adapter on the original encoder instead")
    dim = base_model.get_embedding_dimension() if hasattr(base_model, "get_embedding_dimension") else None
    if dim is not None and dim != adapter.dim:
        raise ConfigError(f"embedding dimension mismatch: the base model gives {dim}-d embeddings, the adapter "
                          f"expects {adapter.dim}-d")
    encoder = base_modules + ([] if isinstance(base_modules[-1], Normalize) else [Normalize()])
    adapted = encoder + adapter_st_modules(adapter) + [Normalize()]
    if side == "both":
        modules: list[torch.nn.Module] = adapted
    else:
        modules = [Router.for_query_document(query_modules=adapted, document_modules=encoder,
                                             default_route="document")]
    model = SentenceTransformer(modules=modules, device="cpu", prompts=dict(getattr(base_model, "prompts", {}) or {}),
                                default_prompt_name=getattr(base_model, "default_prompt_name", None),
                                similarity_fn_name="cosine")
    with atomic_dir(path) as tmp:
        model.save(str(tmp))
    return Path(path)


class AdaptedEncoder:
    """An encoder with an adapter applied: the deployable form for API encoders (and any other).

    ``AdaptedEncoder.load(DIR, api_key=..., base_url=...)`` rebuilds the encoder recorded in DIR's
    ``adapter_config.json``; ``encode_query`` / ``encode_document`` return L2-normalised float32 arrays.
    ``apply=False`` gives the frozen encoder's embeddings (the baseline) through the same code path.
    """

    def __init__(self, adapter: Adapter, encoder: Encoder, side: str = "query", *,
                 cache: EmbeddingCache | str | Path | None | bool = False, apply: bool = True) -> None:
        self.adapter, self.encoder, self.side, self.apply = adapter.eval(), encoder, side, apply
        self.cache = EmbeddingCache.open(cache)

    @classmethod
    def load(cls, path: str | Path, *, api_key: str | None = None, base_url: str | None = None,
             base: str | None = None, cache: EmbeddingCache | str | Path | None | bool = False,
             apply: bool = True) -> AdaptedEncoder:
        adapter, cfg = load_adapter(path)
        encoder = encoder_from_description(cfg.get("encoder") or {}, api_key=api_key, base_url=base_url, base=base)
        return cls(adapter, encoder, cfg.get("side", "query"), cache=cache, apply=apply)

    def _encode(self, texts: list[str], side: Side) -> np.ndarray:
        vecs = normalize(embed_texts(self.encoder, list(texts), side, self.cache, expected_dim=self.adapter.dim))
        if self.apply and (side == "query" or self.side == "both"):
            vecs = normalize(self.transform(vecs))
        return vecs.astype(np.float32)

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        """Apply the adapter to normalised embeddings (no normalisation afterwards)."""
        x = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
        if x.ndim != 2 or x.shape[1] != self.adapter.dim:
            raise ConfigError(f"embedding dimension mismatch: got vectors of shape {tuple(x.shape)}, the adapter "
                              f"expects {self.adapter.dim}-d")
        with torch.no_grad():
            return self.adapter(x).numpy()

    def encode_query(self, texts: list[str]) -> np.ndarray:
        return self._encode(texts, "query")

    def encode_document(self, texts: list[str]) -> np.ndarray:
        return self._encode(texts, "document")
