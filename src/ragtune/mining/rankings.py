"""The miners: each ranks the corpus for every query (``dense``, ``bm25``, ``both``, or a retrieval spec) and scores
the query's positives, so the guards can compare candidates with them."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from ragtune.teacher import _autocast_like

logger = logging.getLogger(__name__)

MINERS = ("dense", "bm25", "both")  # or a retrieval spec string
_QUERY_CHUNK = 1024  # queries scored against the corpus at once: bounds the score matrix to 1024 x n_docs


def rank_corpus(method: str, model: Any, doc_ids: list[str], corpus: Mapping[str, str], queries: dict[str, str],
                positives: dict[str, set[str]], range_max: int, batch_size: int, bm25_language: str,
                show: bool) -> tuple[dict[str, tuple[dict, dict]], dict]:
    """Each miner's ranking (``{source: (top (doc index, score) per query, score of each positive per query)}``) and,
    for ``dense`` / ``both``, the cosine per query of its positives (and with ``both`` of every BM25 candidate)."""
    most_pos = max(len(v) for v in positives.values())
    fetch = range_max + most_pos + 8  # room for positives and duplicates that are removed before ranks count
    rankings: dict[str, tuple[dict, dict]] = {}
    if method in ("bm25", "both"):
        rankings["bm25"] = bm25_rankings(doc_ids, corpus, queries, positives, fetch, bm25_language, show)
    if method not in MINERS:
        rankings[method] = system_rankings(method, doc_ids, corpus, queries, positives, fetch)
    dense_of: dict[str, dict[str, float]] = {}
    if method in ("dense", "both"):
        extra = ({q: [doc_ids[i] for i, _ in r] for q, r in rankings["bm25"][0].items()} if method == "both"
                 else None)
        ranked, dense_of = dense_rankings(model, doc_ids, corpus, queries, positives, fetch, batch_size, show, extra)
        rankings["dense"] = (ranked, {q: {d: s[d] for d in positives[q] if d in s} for q, s in dense_of.items()})
    return rankings, dense_of


def dense_rankings(model: Any, doc_ids: list[str], corpus: Mapping[str, str], queries: dict[str, str],
                   positives: dict[str, set[str]], k: int, batch_size: int, show: bool,
                   extra: Mapping[str, Iterable[str]] | None = None):
    """Top-``k`` (doc index, cosine) per query, and the cosine of each (query, positive) and of each
    (query, ``extra[query]`` doc); the corpus is encoded once, under bf16 autocast on a GPU that supports it."""
    import torch

    ctx = _autocast_like(model)
    encode_doc = getattr(model, "encode_document", None) or model.encode
    encode_query = getattr(model, "encode_query", None) or model.encode
    qids = list(queries)
    with ctx, torch.inference_mode():
        logger.info("mining: encoding %d passages and %d queries", len(doc_ids), len(qids))
        docs = encode_doc([corpus[d] for d in doc_ids], batch_size=batch_size, convert_to_tensor=True,
                          normalize_embeddings=True, show_progress_bar=show).float()
        qs = encode_query([queries[q] for q in qids], batch_size=batch_size, convert_to_tensor=True,
                          normalize_embeddings=True, show_progress_bar=show).float()
    index = {d: i for i, d in enumerate(doc_ids)}
    ranked: dict[str, list[tuple[int, float]]] = {}
    pos_scores: dict[str, dict[str, float]] = {}
    k = min(k, len(doc_ids))
    for lo in range(0, len(qids), _QUERY_CHUNK):
        scores = qs[lo:lo + _QUERY_CHUNK] @ docs.T
        top_s, top_i = torch.topk(scores, k, dim=1)
        for row, qid in enumerate(qids[lo:lo + _QUERY_CHUNK]):
            ranked[qid] = list(zip(top_i[row].tolist(), top_s[row].tolist(), strict=True))
            wanted = set(positives[qid]) | set((extra or {}).get(qid, ()))
            pos_scores[qid] = {p: float(scores[row, index[p]]) for p in wanted if p in index}
    del docs, qs
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return ranked, pos_scores


def bm25_rankings(doc_ids: list[str], corpus: Mapping[str, str], queries: dict[str, str],
                  positives: dict[str, set[str]], k: int, language: str, show: bool):
    """Top-``k`` (doc index, BM25 score) per query, passages sharing no term with it left out, and the BM25 score of
    each (query, positive)."""
    import numpy as np
    from tqdm.auto import tqdm

    from ragtune.retrieval.bm25 import BM25Retriever

    bm25 = BM25Retriever(language=language, show_progress=show).index({d: {"text": corpus[d]} for d in doc_ids})
    index = {d: i for i, d in enumerate(bm25.doc_ids)}
    k = min(k, len(doc_ids))
    ranked: dict[str, list[tuple[int, float]]] = {}
    pos_scores: dict[str, dict[str, float]] = {}
    for qid, query in tqdm(queries.items(), desc="mining with BM25", unit="query", file=sys.stderr,
                           dynamic_ncols=True, disable=not show):
        scores = bm25.scores(query)
        top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        top = top[np.argsort(-scores[top], kind="stable")]
        ranked[qid] = [(int(i), float(scores[i])) for i in top if scores[i] > 0]  # no shared term: not "hard"
        pos_scores[qid] = {p: float(scores[index[p]]) for p in positives[qid] if p in index}
    return ranked, pos_scores


def system_rankings(spec: str, doc_ids: list[str], corpus: Mapping[str, str], queries: dict[str, str],
                    positives: dict[str, set[str]], k: int):
    """Top-``k`` (doc index, score) per query from the retrieval system ``spec`` names, and its scores of the
    positives it retrieved."""
    from ragtune.retrieval.systems import parse_system

    index = {d: i for i, d in enumerate(doc_ids)}
    run = parse_system(spec).search({d: {"text": corpus[d]} for d in doc_ids}, queries, min(k, len(doc_ids)))
    ranked: dict[str, list[tuple[int, float]]] = {}
    pos_scores: dict[str, dict[str, float]] = {}
    for qid in queries:
        hits = sorted(run.get(qid, {}).items(), key=lambda kv: (-kv[1], kv[0]))
        ranked[qid] = [(index[d], float(s)) for d, s in hits]
        pos_scores[qid] = {d: float(s) for d, s in hits if d in positives[qid]}
    return ranked, pos_scores
