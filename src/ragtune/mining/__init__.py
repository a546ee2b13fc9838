"""Hard-negative mining with false-negative guards (margin, rank, teacher). The teacher scorer lives in
:mod:`ragtune.teacher` (its names are re-exported here).

``mine_negatives(pairs, corpus, num_negatives=..., method="dense" | "bm25" | "both" | SPEC, model=...)`` returns, per
query, the passages that the miner ranks high but that are not positives::

    MinedNegatives.negatives = {query_id: [Negative(doc_id, text, score, source, teacher_score), ...]}  # hardest first
    MinedNegatives.stats     = {"candidates": ..., "positive_skipped": ..., "margin_dropped": ..., ...}

How a query's candidates are chosen:

1. The miner ranks the corpus: ``dense`` = cosine of the base model's embeddings (corpus encoded once),
   ``bm25`` = :class:`~ragtune.retrieval.bm25.BM25Retriever`, ``both`` = the two lists interleaved; any other
   string is a retrieval spec (:func:`ragtune.retrieval.systems.parse_system`, e.g. ``hybrid:MODEL``): the first
   stage a reranker will sit behind mines the candidates it will see.
2. Known positives are removed: every chunk judged relevant for the query, and every chunk whose text equals a
   positive's text (duplicated chunks). Ranks are counted after this, so ``range_min=3`` skips the three best
   non-positive candidates and ``range_max=30`` looks no further than the 30th.
3. The guard drops candidates that score too close to the positive on the miner's own score: ``absolute_margin``
   drops ``score > positive - margin``; ``relative_margin`` drops ``score > positive - |positive| * margin`` (the
   NV-Retriever "TopK-PercPos" rule). With several positives the lowest-scoring one sets the bar. With ``both``,
   every candidate passes the dense guard and BM25 candidates the BM25 guard too.
   The rank guard (``rank_guard``) looks at the candidates ranked *above* the query's best positive in the miner's
   list: ``same-doc`` drops those cut from the same source document as a positive (``groups``: chunk id -> document)
   or sharing at least ``overlap`` of their words with a positive (overlapping chunks, near duplicates); ``above``
   drops them all (safest with incomplete judgements); ``none`` (default) keeps them.
4. Optionally a teacher (anything with ``predict(pairs, batch_size)``, e.g. a sentence-transformers CrossEncoder or
   :func:`ragtune.retrieval.scorers.load_scorer`) rescores the first ``teacher_candidates`` survivors and drops those
   it scores above ``teacher(positive) - teacher_margin``.
5. The first ``num_negatives`` survivors are kept (``sampling="random"``: a seeded sample of the survivors), topped
   up with random passages when too few survive (never a positive, nor a candidate a guard dropped).

Why not ``sentence_transformers.util.mine_hard_negatives``: it identifies positives and candidates by text only
(a masked ICT positive or a duplicated chunk is not recognised as the query's positive and cannot be mapped back to a
chunk id), mines only with a dense model, calls the cross-encoder with CrossEncoder-only keyword arguments and margins
on its scores alone, and prints its statistics instead of returning them. The margin rules above are the same as
its ``absolute_margin`` / ``relative_margin``.

Modules: ``rankings`` (the miners, step 1), ``guards`` (the margin, rank and teacher guards, steps 3-4), ``negatives``
(:func:`mine_negatives` itself, with steps 2 and 5) and ``results`` (what it returns).
"""

from __future__ import annotations

from ragtune._io import text_key
from ragtune.mining.guards import RANK_GUARDS
from ragtune.mining.negatives import mine_negatives
from ragtune.mining.rankings import MINERS
from ragtune.mining.results import MinedNegatives, Negative
from ragtune.teacher import TeacherScorer, resolve_teacher, teacher_name

__all__ = ["MINERS", "RANK_GUARDS", "MinedNegatives", "Negative", "mine_negatives",
           "TeacherScorer", "resolve_teacher", "teacher_name", "text_key"]  # the last four: re-exported
