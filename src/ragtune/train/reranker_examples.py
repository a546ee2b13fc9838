"""Training examples for the reranker: each query's judged positives, its hard negatives, and the columns the
trainer reads (:func:`ragtune.train.reranker.train_reranker` builds them with the functions here).

Negatives: unless the caller gives them (``negatives={query_id: [doc_id, ...]}``, see :func:`given_negatives`),
they are mined by :func:`ragtune.mining.mine_negatives` with the first stage the reranker will sit behind
(``first_stage``, default ``hybrid``), so it trains on the candidates it will see. Of each query's top
``mine_top_k``, known positives (judged > 0, or the same text as a positive) are skipped, then the false-negative
guard looks at the candidates ranked *above* the best positive:

- ``same-doc`` (default): drop those cut from the same source document as a positive (the chunk's ``doc`` field)
  or sharing at least ``overlap`` of their words with a positive (overlapping chunks, near duplicates): they likely
  hold the answer too. Other candidates above the positive are kept: they are the confusions a reranker is for.
- ``above``: drop every candidate ranked above the positive (safest with incomplete judgements, fewer hard ones).
- ``none``: keep them all.

Then ``negatives`` per query are kept (``sampling``: the hardest, or a seeded random sample), topped up with
random passages (never a dropped one) when too few survive.

:func:`build_examples` lays them out for the loss: one ``(query, passage, label)`` row per pair for pointwise
``bce``, one ``(query, docs, labels)`` row per query (positives first) for the listwise losses.
"""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING, Any

from ragtune.data.beir import BeirDataset, Corpus
from ragtune.errors import DataFormatError

if TYPE_CHECKING:
    from ragtune.train.reranker import RerankerTrainConfig

logger = logging.getLogger(__name__)


def query_positives(dataset: BeirDataset) -> dict[str, list[str]]:
    """Judged-relevant doc ids per query that has text and at least one positive in the corpus."""
    out = {}
    for qid, judged in dataset.qrels.items():
        pos = [d for d, s in judged.items() if s > 0 and d in dataset.corpus]
        if pos and (dataset.queries.get(qid) or "").strip():
            out[qid] = pos
    return out


def mine_negatives(dataset: BeirDataset, config: RerankerTrainConfig,
                   positives: dict[str, list[str]] | None = None) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """Hard negatives per query from ``config.first_stage`` and the counts of :func:`ragtune.mining.mine_negatives`,
    which does the work: its rank guard is ``config.false_negative_guard`` over the chunks' source documents."""
    from ragtune.mining import mine_negatives as mine
    from ragtune.retrieval.bm25 import doc_text
    from ragtune.train.pairs import Pair

    positives = positives if positives is not None else query_positives(dataset)
    texts = {d: doc_text(doc) for d, doc in dataset.corpus.items()}
    groups = {d: str(doc["doc"]) for d, doc in dataset.corpus.items() if doc.get("doc")}
    pairs = [Pair(dataset.queries[q], texts[d], d, groups.get(d, d), q) for q, pos in positives.items() for d in pos]
    # a retrieval spec; bare "dense" (the packaged MiniLM as a spec) would be mining's own model-less dense miner
    method = "dense:minilm" if config.first_stage.strip() == "dense" else config.first_stage
    mined = mine(pairs, texts, num_negatives=config.negatives, method=method, range_max=config.mine_top_k,
                 relative_margin=None, rank_guard=config.false_negative_guard, groups=groups, overlap=config.overlap,
                 sampling=config.sampling, seed=config.seed)
    return {q: [n.doc_id for n in negs] for q, negs in mined.negatives.items()}, \
        {"first_stage": config.first_stage, **mined.stats}


def given_negatives(dataset: BeirDataset, positives: dict[str, list[str]],
                    negatives: dict[str, list[str]], n: int) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """The caller's negatives per training query: known doc ids only, positives removed, at most ``n`` each."""
    unknown = sorted({d for negs in negatives.values() for d in negs} - set(dataset.corpus))
    if unknown:
        raise DataFormatError(f"negatives: {len(unknown)} doc ids are not in the training corpus (e.g. "
                              f"{unknown[:3]}); pass negatives mined from this corpus")
    out = {q: [d for d in negatives.get(q, []) if d not in set(pos)][:n] for q, pos in positives.items()}
    missing = sum(1 for negs in out.values() if not negs)
    if missing:
        logger.warning("negatives: %d of %d training queries have none; they train on positives only",
                       missing, len(out))
    return out, {"given": True, "queries": len(out), "kept": sum(len(v) for v in out.values())}


def build_examples(corpus: Corpus, queries: dict[str, str], positives: dict[str, list[str]],
                   negatives: dict[str, list[str]], loss: str, seed: int = 42) -> dict[str, list]:
    """Columns of the training dataset: ``query, passage, label`` (bce) or ``query, docs, labels`` (listwise)."""
    from ragtune.retrieval.bm25 import doc_text

    qids = sorted(positives)
    random.Random(seed).shuffle(qids)
    if loss == "bce":
        rows: dict[str, list] = {"query": [], "passage": [], "label": []}
        for q in qids:
            for d, label in [(d, 1.0) for d in positives[q]] + [(d, 0.0) for d in negatives.get(q, [])]:
                rows["query"].append(queries[q])
                rows["passage"].append(doc_text(corpus[d]))
                rows["label"].append(label)
        order = list(range(len(rows["label"])))
        random.Random(seed).shuffle(order)
        return {k: [v[i] for i in order] for k, v in rows.items()}
    lists: dict[str, list] = {"query": [], "docs": [], "labels": []}
    for q in qids:
        docs = positives[q] + negatives.get(q, [])
        lists["query"].append(queries[q])
        lists["docs"].append([doc_text(corpus[d]) for d in docs])
        lists["labels"].append([1.0] * len(positives[q]) + [0.0] * len(negatives.get(q, [])))
    return lists
