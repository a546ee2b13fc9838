"""Exact dense retrieval that streams the corpus in blocks, so memory stays bounded for million-passage corpora.

Queries are encoded once; the corpus is encoded ``block_size`` documents at a time, scored against every query
(cosine = dot product of L2-normalised embeddings) and merged into a running top-k per query with ``torch.topk``.
Only one block of corpus embeddings is alive at a time unless ``cache_embeddings=True``.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any

from ragtune.data.beir import Corpus, Queries, Run
from ragtune.errors import ConfigError
from ragtune.retrieval.bm25 import doc_text

logger = logging.getLogger(__name__)

_QUERY_CHUNK = 1024  # queries scored against a block at once: bounds the score matrix to 1024 x block_size


def _corpus_fingerprint(corpus: Corpus, doc_ids: list[str]) -> str:
    """A hash of every id and indexed text, computed without keeping the texts."""
    h = hashlib.sha1()
    for did in doc_ids:
        h.update(did.encode("utf-8", "surrogatepass") + b"\0")
        h.update(doc_text(corpus[did]).encode("utf-8", "surrogatepass") + b"\1")
    return h.hexdigest()


class DenseRetriever:
    """Bi-encoder retrieval with a sentence-transformers model.

    Args:
        model: a ``SentenceTransformer`` instance, a local path, a hub name, or ``"minilm"`` for the packaged
            all-MiniLM-L6-v2 (resolved by :func:`ragtune.models.load_sentence_transformer`).
        batch_size: encoding batch size.
        block_size: corpus documents encoded and scored per block (memory ~ block_size x dim floats).
        top_k: default number of documents returned per query.
        max_length: tokens read per text, set as the model's ``max_seq_length`` when it is first used (MiniLM
            ships with 256; its encoder can read 512). None keeps the model's own. Longer texts are cut there.
        cache_embeddings: keep the corpus embeddings after a search, so repeated searches over the same corpus
            only encode the queries (memory: all corpus embeddings).
        device: torch device for a model loaded by name.
        show_progress: progress bars while encoding; default: only when logging is at INFO or lower.
    """

    def __init__(self, model: Any = "minilm", batch_size: int = 64, block_size: int = 50_000, top_k: int = 100,
                 *, cache_embeddings: bool = False, device: str | None = None,
                 show_progress: bool | None = None, max_length: int | None = None):
        for arg, value in (("batch_size", batch_size), ("block_size", block_size), ("top_k", top_k),
                           ("max_length", 1 if max_length is None else max_length)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"DenseRetriever {arg}={value!r}: must be a positive integer")
        self._model = model if not isinstance(model, str | Path) else None
        self.model_name = str(model) if isinstance(model, str | Path) else type(model).__name__
        self.batch_size, self.block_size, self.top_k = batch_size, block_size, top_k
        self.cache_embeddings = cache_embeddings
        self.device = device
        self.show_progress = show_progress
        self.max_length = max_length
        self._length_set = False
        self.timings: dict[str, float] = {}
        self._cache_key: str | None = None
        self._cached: Any = None  # torch.Tensor of every corpus embedding when cache_embeddings

    @property
    def model(self):
        """The SentenceTransformer, loaded on first use."""
        if self._model is None:
            from ragtune.models import load_sentence_transformer

            self._model = load_sentence_transformer(self.model_name, device=self.device)
        if self.max_length is not None and not self._length_set:
            from ragtune.models import set_max_seq_length

            set_max_seq_length(self._model, self.max_length, "DenseRetriever max_length", self.model_name)
            self._length_set = True
        return self._model

    def _progress(self) -> bool:
        if self.show_progress is not None:
            return self.show_progress
        return logger.getEffectiveLevel() <= logging.INFO

    def _encode(self, texts: list[str], kind: str):
        """Normalised float32 embeddings on the CPU-or-model device; ``kind`` is "query" or "document"."""
        model = self.model
        # sentence-transformers >= 5 has encode_query / encode_document (they apply the model's prompts);
        # the InformationRetrievalEvaluator uses them too, so scores match it.
        encode = getattr(model, f"encode_{kind}", None) or model.encode
        return encode(texts, batch_size=self.batch_size, show_progress_bar=self._progress(),
                      convert_to_tensor=True, normalize_embeddings=True).float()

    def encode_queries(self, queries: Queries):
        return self._encode(list(queries.values()), "query")

    def encode_corpus(self, texts: list[str]):
        return self._encode(texts, "document")

    def clear_cache(self) -> None:
        self._cache_key, self._cached = None, None

    def search(self, corpus: Corpus, queries: Queries, top_k: int | None = None) -> Run:
        """Exact top ``top_k`` (default ``self.top_k``) documents per query by cosine similarity."""
        import torch

        k = self.top_k if top_k is None else top_k
        if k < 1:
            raise ConfigError(f"top_k={k}: must be at least 1")
        if not corpus:
            raise ConfigError("corpus is empty: dense retrieval needs at least one document")
        qids = list(queries)
        if not qids:
            return {}
        doc_ids = list(corpus)
        n_docs = len(doc_ids)
        k = min(k, n_docs)
        start = time.perf_counter()
        _ = self.model  # load outside the index/search clocks
        self.timings = {"load_s": time.perf_counter() - start, "index_s": 0.0, "search_s": 0.0}

        start = time.perf_counter()
        q_emb = self.encode_queries(queries)
        self.timings["search_s"] += time.perf_counter() - start

        key = _corpus_fingerprint(corpus, doc_ids) if self.cache_embeddings else None
        cached = self._cached if key is not None and key == self._cache_key else None
        if cached is None:
            self.clear_cache()  # free stale embeddings before encoding a different corpus
        kept: list[Any] = []
        top_scores = torch.full((len(qids), 0), float("-inf"))
        top_idx = torch.zeros((len(qids), 0), dtype=torch.long)
        n_blocks = (n_docs + self.block_size - 1) // self.block_size
        for b, lo in enumerate(range(0, n_docs, self.block_size)):
            hi = min(lo + self.block_size, n_docs)
            start = time.perf_counter()
            if cached is not None:
                block = cached[lo:hi]
            else:
                if n_blocks > 1:
                    logger.info("encoding corpus block %d/%d (%d documents)", b + 1, n_blocks, hi - lo)
                # texts are built per block too, so a copy of the whole corpus text never exists
                block = self.encode_corpus([doc_text(corpus[d]) for d in doc_ids[lo:hi]])
                if key is not None:
                    kept.append(block.cpu())
            self.timings["index_s"] += time.perf_counter() - start
            start = time.perf_counter()
            top_scores, top_idx = self._merge_block(q_emb, block.to(q_emb.device), lo, top_scores, top_idx, k)
            self.timings["search_s"] += time.perf_counter() - start
            del block
        if key is not None and cached is None:
            self._cache_key, self._cached = key, torch.cat(kept)

        run: Run = {}
        for qid, idx_row, score_row in zip(qids, top_idx.tolist(), top_scores.tolist(), strict=True):
            run[qid] = {doc_ids[i]: float(s) for i, s in zip(idx_row, score_row, strict=True)}
        return run

    @staticmethod
    def _merge_block(q_emb, block, offset: int, top_scores, top_idx, k: int):
        """Fold one block's scores into the running top-k (scores and global corpus indices, on the CPU)."""
        import torch

        new_scores, new_idx = [], []
        for qs in range(0, q_emb.shape[0], _QUERY_CHUNK):
            scores = q_emb[qs:qs + _QUERY_CHUNK] @ block.T
            kk = min(k, scores.shape[1])
            s, i = torch.topk(scores, kk, dim=1)
            new_scores.append(s.cpu())
            new_idx.append(i.cpu() + offset)
        scores = torch.cat([top_scores, torch.cat(new_scores)], dim=1)
        idx = torch.cat([top_idx, torch.cat(new_idx)], dim=1)
        kk = min(k, scores.shape[1])
        best, pos = torch.topk(scores, kk, dim=1)
        return best, torch.gather(idx, 1, pos)
