"""``adapter:DIR`` as a retrieval system: the encoder recorded in DIR (endpoint or ST model) plus its adapter.

Exact cosine search over the whole corpus. Embeddings go through the cache: for an endpoint encoder the user cache
(:func:`~ragtune.adapters.cache.default_cache_path`) by default, so a second evaluation costs no API calls; for a
local model an in-memory one. ``apply=False`` evaluates the frozen encoder through the same path (the baseline).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from ragtune.adapters.cache import EmbeddingCache
from ragtune.adapters.encoders import EndpointEncoder
from ragtune.adapters.export import AdaptedEncoder
from ragtune.data.beir import Corpus, Queries, Run
from ragtune.errors import ConfigError
from ragtune.retrieval.bm25 import doc_text
from ragtune.retrieval.systems import RetrievalSystem

logger = logging.getLogger(__name__)

_QUERY_CHUNK = 1024


class AdapterSystem(RetrievalSystem):
    def __init__(self, path: str | Path, *, apply: bool = True, name: str | None = None,
                 cache: EmbeddingCache | str | Path | None | bool = None, api_key: str | None = None,
                 base_url: str | None = None, base: str | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        self.name = name or (f"adapter:{path}" if apply else f"adapter-base:{path}")
        self.apply, self.cache = apply, cache
        self._load_kwargs: dict[str, Any] = {"api_key": api_key, "base_url": base_url, "base": base}
        self._encoder: AdaptedEncoder | None = None

    @property
    def encoder(self) -> AdaptedEncoder:
        if self._encoder is None:
            enc = AdaptedEncoder.load(self.path, apply=self.apply, cache=False, **self._load_kwargs)
            cache = self.cache
            if cache is None:
                cache = isinstance(enc.encoder, EndpointEncoder)
            enc.cache = EmbeddingCache.open(cache)
            self._encoder = enc
        return self._encoder

    def _search(self, corpus: Corpus, queries: Queries, top_k: int, cache: Any) -> Run:
        if not corpus:
            raise ConfigError("corpus is empty: adapter retrieval needs at least one document")
        start = time.perf_counter()
        enc = self.encoder
        self.timings = {"load_s": time.perf_counter() - start}
        doc_ids, qids = list(corpus), list(queries)
        start = time.perf_counter()
        docs = torch.from_numpy(enc.encode_document([doc_text(corpus[d]) for d in doc_ids]))
        self.timings["index_s"] = time.perf_counter() - start
        start = time.perf_counter()
        q = torch.from_numpy(enc.encode_query([queries[x] for x in qids]))
        run: Run = {}
        k = min(top_k, len(doc_ids))
        for lo in range(0, len(qids), _QUERY_CHUNK):
            vals, idx = torch.topk(q[lo:lo + _QUERY_CHUNK] @ docs.T, k, dim=1)
            for qid, irow, vrow in zip(qids[lo:lo + _QUERY_CHUNK], idx.tolist(), vals.tolist(), strict=True):
                run[qid] = {doc_ids[i]: float(v) for i, v in zip(irow, vrow, strict=True)}
        self.timings["search_s"] = time.perf_counter() - start
        return run
