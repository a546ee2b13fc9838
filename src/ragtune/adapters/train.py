"""``train_adapter``: embed once through the cache, fit on cached vectors, export.

::

    result = train_adapter(load_beir(DIR, queries="gen-queries.jsonl", qrels="gen-qrels.tsv"),
                           AdapterConfig(kind="linear"), "out/adapter")

writes ``out/adapter/adapter.safetensors`` + ``adapter_config.json`` (any encoder; load with
:class:`~ragtune.adapters.export.AdaptedEncoder`), ``out/adapter/model/`` (a sentence-transformers directory, for
an ST base) and ``out/adapter/train-log.json``.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ragtune._io import atomic_write_json
from ragtune.adapters.cache import EmbeddingCache
from ragtune.adapters.config import AdapterConfig
from ragtune.adapters.encoders import (
    Encoder,
    EndpointEncoder,
    SentenceTransformerEncoder,
    embed_texts,
    normalize,
)
from ragtune.adapters.fit import VectorSet, fit_adapter
from ragtune.adapters.modules import Adapter, save_adapter
from ragtune.adapters.registry import build_adapter, canonical_kind
from ragtune.data.beir import BeirDataset, Corpus, Qrels, Queries
from ragtune.errors import ConfigError, DataFormatError
from ragtune.retrieval.bm25 import doc_text

logger = logging.getLogger(__name__)

MIN_AUTO_VAL_QUERIES = 20  # below this many training queries, no automatic validation split


@dataclass
class AdapterTrainResult:
    adapter: Adapter
    output_dir: Path | None
    model_dir: Path | None
    kind: str
    side: str
    dim: int
    n_queries: int
    n_pairs: int
    n_docs: int
    epochs_run: int
    best_epoch: int
    steps: int
    val_base: dict[str, float] | None
    val_best: dict[str, float] | None
    history: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    embedded: dict[str, int] = field(default_factory=dict)
    reembed_documents: bool = False

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "adapter"}
        out["output_dir"] = str(self.output_dir) if self.output_dir else None
        out["model_dir"] = str(self.model_dir) if self.model_dir else None
        out["parameters"] = self.adapter.num_parameters()
        return out


def make_encoder(config: AdapterConfig, *, api_key: str | None = None) -> Encoder:
    """The frozen encoder ``config`` names: the endpoint when ``endpoint`` is set, else the ST model ``base``."""
    if config.endpoint:
        return EndpointEncoder(config.endpoint, config.endpoint_model or "", api_key=api_key,
                               document_model=config.endpoint_document_model,
                               input_type=config.endpoint_input_type, query_prefix=config.query_prefix,
                               document_prefix=config.document_prefix, batch_size=config.endpoint_batch_size,
                               max_retries=config.max_retries, timeout=config.timeout)
    if config.query_prefix or config.document_prefix:
        raise ConfigError("query_prefix / document_prefix apply to endpoint encoders; a sentence-transformers "
                          "model brings its own prompts (config_sentence_transformers.json)")
    return SentenceTransformerEncoder(config.base)


def _split_data(data: Any) -> tuple[Corpus, Queries, Qrels, str]:
    if isinstance(data, BeirDataset):
        return data.corpus, data.queries, data.qrels, data.name or "dataset"
    if isinstance(data, tuple | list) and len(data) >= 3:
        return data[0], data[1], data[2], "dataset"
    raise TypeError(f"expected a BeirDataset or (corpus, queries, qrels), got {type(data).__name__}")


def _examples(corpus: Corpus, queries: Queries, qrels: Qrels) -> tuple[list[str], list[list[str]]]:
    """Judged queries with text and at least one positive (score > 0) document in the corpus."""
    qids, positives = [], []
    for qid, judged in qrels.items():
        pos = [d for d, s in judged.items() if s > 0 and d in corpus]
        if pos and (queries.get(qid) or "").strip():
            qids.append(qid)
            positives.append(pos)
    return qids, positives


class _Embedder:
    """Embeds through the cache and counts what was new."""

    def __init__(self, encoder: Encoder, cache: EmbeddingCache) -> None:
        self.encoder, self.cache = encoder, cache
        self.new = 0
        self.total = 0

    def __call__(self, texts: list[str], side: str) -> torch.Tensor:
        before = self.cache.count(self.encoder.key(side))  # type: ignore[arg-type]
        vecs = embed_texts(self.encoder, texts, side, self.cache)  # type: ignore[arg-type]
        self.new += self.cache.count(self.encoder.key(side)) - before  # type: ignore[arg-type]
        self.total += len(texts)
        return torch.from_numpy(np.ascontiguousarray(normalize(vecs), dtype=np.float32))


def _vector_set(embed: _Embedder, corpus: Corpus, queries: Queries, qids: list[str],
                positives: list[list[str]]) -> VectorSet:
    doc_ids = list(corpus)
    row = {d: i for i, d in enumerate(doc_ids)}
    docs = embed([doc_text(corpus[d]) for d in doc_ids], "document")
    qvecs = embed([queries[q] for q in qids], "query")
    if qvecs.shape[1] != docs.shape[1]:
        raise ConfigError(f"embedding dimension mismatch: queries are {qvecs.shape[1]}-d but documents "
                          f"{docs.shape[1]}-d; use one model for both sides (endpoint_document_model must have "
                          "the same dimension as endpoint_model)")
    return VectorSet(qvecs, docs, [[row[d] for d in pos] for pos in positives], list(qids), doc_ids)


def train_adapter(train: Any, config: AdapterConfig | None = None, output_dir: str | Path | None = None, *,
                  val: BeirDataset | None = None, encoder: Encoder | None = None,
                  cache: EmbeddingCache | str | Path | None | bool = None, api_key: str | None = None
                  ) -> AdapterTrainResult:
    """Train an adapter on ``train`` (a BeirDataset or ``(corpus, queries, qrels)``) over a frozen encoder.

    ``encoder`` defaults to :func:`make_encoder(config) <make_encoder>`; ``cache`` is an
    :class:`EmbeddingCache`, a path, None (the user cache, :func:`~ragtune.adapters.cache.default_cache_path`)
    or False (in memory). Without ``val``, ``config.val_fraction`` of the training queries is held out for early
    stopping. With ``output_dir``, the adapter is saved there (see the module docstring).
    """
    cfg = config or AdapterConfig()
    t0 = time.perf_counter()
    kind = canonical_kind(cfg.kind)
    corpus, queries, qrels, name = _split_data(train)
    qids, positives = _examples(corpus, queries, qrels)
    if not qids:
        raise DataFormatError(f"the training set {name!r} has no usable (query, positive document) pair: "
                              f"{len(qrels)} judged queries, {len(corpus)} documents. Check that the qrels' "
                              "query-ids and corpus-ids match the queries and corpus files and have score > 0.")
    if sum(len(p) for p in positives) < 2:
        raise DataFormatError(f"the training set {name!r} has 1 (query, positive) pair; contrastive training "
                              "needs at least 2 (each pair's positive is another's negative)")
    order = list(range(len(qids)))
    random.Random(cfg.seed).shuffle(order)
    n_val = round(len(qids) * cfg.val_fraction) if val is None and len(qids) >= MIN_AUTO_VAL_QUERIES else 0
    held, kept = sorted(order[:n_val]), sorted(order[n_val:])
    if sum(len(positives[i]) for i in kept) < 2:
        raise ConfigError(f"val_fraction={cfg.val_fraction} leaves fewer than 2 training pairs of {len(qids)} "
                          "queries; lower val_fraction or pass a separate --val set")
    if val is None and n_val == 0:
        logger.warning("no validation set (%d training queries, val_fraction %.2f): training runs all %d epochs "
                       "without early stopping", len(qids), cfg.val_fraction, cfg.epochs)
    enc = encoder or make_encoder(cfg, api_key=api_key)
    store = EmbeddingCache.open(cache)
    embed = _Embedder(enc, store)
    all_set = _vector_set(embed, corpus, queries, qids, positives)
    train_set = VectorSet(all_set.queries[kept], all_set.docs, [all_set.positives[i] for i in kept],
                          [qids[i] for i in kept], all_set.doc_ids)
    val_set = None
    if n_val:
        val_set = VectorSet(all_set.queries[held], all_set.docs, [all_set.positives[i] for i in held],
                            [qids[i] for i in held], all_set.doc_ids)
    elif val is not None:
        v_corpus, v_queries, v_qrels, v_name = _split_data(val)
        v_qids, v_pos = _examples(v_corpus, v_queries, v_qrels)
        if not v_qids:
            raise DataFormatError(f"the validation set {v_name!r} has no judged query with a positive document")
        val_set = _vector_set(embed, v_corpus, v_queries, v_qids, v_pos)
        if val_set.queries.shape[1] != train_set.queries.shape[1]:
            raise ConfigError("embedding dimension mismatch between the training and validation sets")
    embed_s = time.perf_counter() - t0
    dim = int(train_set.queries.shape[1])
    adapter = build_adapter(kind, dim, **cfg.adapter_params(kind))
    logger.info("training a %s adapter (%d parameters, side=%s) on %d queries / %d pairs over %d documents",
                kind, adapter.num_parameters(), cfg.side, len(train_set.query_ids),
                sum(len(p) for p in train_set.positives), len(all_set.doc_ids))
    fit = fit_adapter(adapter, train_set, cfg, val_set)
    result = AdapterTrainResult(
        adapter=fit.adapter, output_dir=Path(output_dir) if output_dir else None, model_dir=None, kind=kind,
        side=cfg.side, dim=dim, n_queries=len(train_set.query_ids),
        n_pairs=sum(len(p) for p in train_set.positives), n_docs=len(all_set.doc_ids), epochs_run=fit.epochs_run,
        best_epoch=fit.best_epoch, steps=fit.steps, val_base=fit.val_base, val_best=fit.val_best,
        history=fit.history, embedded={"texts": embed.total, "new": embed.new, "cached": embed.total - embed.new,
                                       "requests": int(getattr(enc, "requests", 0))},
        reembed_documents=cfg.side == "both")
    result.timings = {"embed_s": round(embed_s, 3), "train_s": round(fit.seconds, 3)}
    if output_dir is not None:
        t_export = time.perf_counter()
        _export(result, enc, cfg)
        result.timings["export_s"] = round(time.perf_counter() - t_export, 3)
    result.timings["total_s"] = round(time.perf_counter() - t0, 3)
    if output_dir is not None:
        atomic_write_json(Path(output_dir) / "train-log.json", {**result.to_dict(),
                                                               "config": cfg.model_dump(mode="json")})
    if cfg.side == "both":
        logger.warning("side=both: documents pass through the adapter too, so the document index must be "
                       "re-embedded with the adapted model before searching")
    return result


def _export(result: AdapterTrainResult, encoder: Encoder, cfg: AdapterConfig) -> None:
    out = result.output_dir
    assert out is not None
    summary = {"val_base": result.val_base, "val_best": result.val_best, "best_epoch": result.best_epoch,
               "n_pairs": result.n_pairs}
    save_adapter(result.adapter, out, extra={"side": cfg.side, "normalize": True, "encoder": encoder.describe(),
                                             "reembed_documents": cfg.side == "both", "training": summary})
    if isinstance(encoder, SentenceTransformerEncoder):
        from ragtune.adapters.export import export_sentence_transformer

        result.model_dir = export_sentence_transformer(result.adapter, encoder.model, out / "model", cfg.side)
        logger.info("sentence-transformers model with the adapter inside: %s", result.model_dir)
    logger.info("adapter written to %s", out)
