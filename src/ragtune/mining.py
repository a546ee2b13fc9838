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
"""

from __future__ import annotations

import logging
import random
import re
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ragtune._io import text_key
from ragtune.errors import ConfigError
from ragtune.teacher import TeacherScorer, _autocast_like, _show_progress, resolve_teacher, teacher_name

if TYPE_CHECKING:
    from ragtune.train.pairs import Pair

__all__ = ["MINERS", "RANK_GUARDS", "MinedNegatives", "Negative", "mine_negatives",
           "TeacherScorer", "resolve_teacher", "teacher_name", "text_key"]  # the last four: re-exported

logger = logging.getLogger(__name__)

MINERS = ("dense", "bm25", "both")  # or a retrieval spec string
RANK_GUARDS = ("none", "same-doc", "above")
_QUERY_CHUNK = 1024  # queries scored against the corpus at once: bounds the score matrix to 1024 x n_docs


@dataclass(frozen=True)
class Negative:
    """One mined negative. ``score`` is the miner's score (cosine for dense, BM25 for bm25); ``source`` is
    ``dense``, ``bm25``, ``user`` (given with the pair) or ``random`` (padding when too few survived the guard)."""

    doc_id: str
    text: str
    score: float | None
    source: str
    teacher_score: float | None = None


@dataclass
class MinedNegatives:
    """Negatives per query id (hardest first), the miner's positive score per query, and counts.

    ``stats`` keys: ``method``, ``queries``, ``wanted`` (negatives per query), ``candidates`` (inside the rank window),
    ``positive_skipped`` (known positives / duplicates met in the ranking), ``margin_dropped`` (miner guard),
    ``rank_guard_dropped`` (candidates above the positive that the rank guard dropped),
    ``teacher_scored`` / ``teacher_dropped`` (teacher guard), ``kept``, ``user`` (given with the pairs), ``padded``
    (random fill), ``short_queries`` (queries with fewer hard negatives than wanted), ``seconds``.
    """

    negatives: dict[str, list[Negative]]
    positive_scores: dict[str, float] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"negatives": {q: [asdict(n) for n in negs] for q, negs in self.negatives.items()},
                "positive_scores": self.positive_scores, "stats": self.stats}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MinedNegatives:
        return cls({q: [Negative(**n) for n in negs] for q, negs in data["negatives"].items()},
                   dict(data.get("positive_scores") or {}), dict(data.get("stats") or {}))


# --- miners ----------------------------------------------------------------------------------------------------


def _dense_rankings(model: Any, doc_ids: list[str], corpus: Mapping[str, str], queries: dict[str, str],
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


def _bm25_rankings(doc_ids: list[str], corpus: Mapping[str, str], queries: dict[str, str],
                   positives: dict[str, set[str]], k: int, language: str, show: bool):
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


def _system_rankings(spec: str, doc_ids: list[str], corpus: Mapping[str, str], queries: dict[str, str],
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


def _words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


def _too_close(score: float, positive: float, absolute: float | None, relative: float | None) -> bool:
    if absolute is not None and score > positive - absolute:
        return True
    return relative is not None and score > positive - abs(positive) * relative


def mine_negatives(
    pairs: Sequence[Pair],
    corpus: Mapping[str, str],
    *,
    num_negatives: int,
    method: Literal["dense", "bm25", "both"] = "dense",
    model: Any = None,
    known_positives: Mapping[str, Iterable[str]] | None = None,
    range_min: int = 0,
    range_max: int = 30,
    absolute_margin: float | None = None,
    relative_margin: float | None = None,
    teacher: Any = None,
    teacher_margin: float | None = None,
    teacher_candidates: int | None = None,
    rank_guard: Literal["none", "same-doc", "above"] = "none",
    groups: Mapping[str, str] | None = None,
    overlap: float = 0.6,
    sampling: Literal["top", "random"] = "top",
    pad_random: bool = True,
    pad_with_dropped: bool = False,
    seed: int = 42,
    batch_size: int = 128,
    bm25_language: str = "auto",
    show_progress: bool | None = None,
) -> MinedNegatives:
    """Mine ``num_negatives`` hard negatives per query of ``pairs`` from ``corpus`` (``{doc_id: passage text}``).

    Args:
        pairs: training pairs (``query_id``, ``query``, ``positive_id``, ``positive``, optional ``negatives`` texts
            given by the user, which come first and are counted as ``user``).
        corpus: every passage a negative may come from; it must hold each ``positive_id``.
        method: ``dense`` (needs ``model``, a SentenceTransformer), ``bm25``, ``both``, or a retrieval spec
            (``hybrid:MODEL``, ``dense:MODEL``, ...) whose system ranks the corpus.
        known_positives: extra positives per query id (e.g. all judged chunks from the qrels); the pairs' own
            positives are always known.
        range_min / range_max: skip the best ``range_min`` non-positive candidates; look no further than rank
            ``range_max``.
        absolute_margin / relative_margin: the false-negative guard on the miner's scores (see the module doc).
        teacher: a :class:`TeacherScorer` (or an object with ``predict``, wrapped in an uncached one); with
            ``teacher_margin`` set it drops candidates scoring above ``teacher(positive) - teacher_margin``.
        teacher_candidates: how many guard survivors per query the teacher rescores (default ``2 * n + 2``).
        rank_guard / groups / overlap: the guard on candidates ranked above the best positive (see the module doc);
            ``groups`` maps chunk ids to their source document (``same-doc``).
        sampling: ``top`` keeps the best survivors, ``random`` a seeded sample of them.
        pad_random: fill queries with too few survivors with random non-positive passages (seeded per query),
            so every training row has the same number of negatives. Never a candidate a guard dropped (a likely
            unjudged positive), unless ``pad_with_dropped`` and a tiny corpus has nothing else.
    """
    if not isinstance(method, str) or not method.strip():
        raise ConfigError(f"mine_with={method!r}: use one of {', '.join(MINERS)} or a retrieval spec")
    if rank_guard not in RANK_GUARDS:
        raise ConfigError(f"rank_guard={rank_guard!r}: use one of {', '.join(RANK_GUARDS)}")
    if not 0 < overlap <= 1:
        raise ConfigError(f"overlap={overlap}: a share of words, in (0, 1]")
    if num_negatives < 1:
        raise ConfigError(f"num_negatives={num_negatives}: must be at least 1 to mine anything")
    if not 0 <= range_min < range_max:
        raise ConfigError(f"range_min={range_min}, range_max={range_max}: need 0 <= range_min < range_max")
    if method in ("dense", "both") and model is None:
        raise ConfigError(f"mine_with={method!r} needs the base model (model=...); or mine with 'bm25'")
    t0 = time.perf_counter()
    show = _show_progress(show_progress)
    queries: dict[str, str] = {}
    positives: dict[str, set[str]] = {}
    pos_texts: dict[str, set[str]] = {}
    pair_pos: dict[str, list[str]] = {}
    user_negs: dict[str, list[str]] = {}
    for p in pairs:
        queries.setdefault(p.query_id, p.query)
        positives.setdefault(p.query_id, set()).add(p.positive_id)
        pos_texts.setdefault(p.query_id, set()).add(p.positive)
        pair_pos.setdefault(p.query_id, []).append(p.positive)
        for neg in getattr(p, "negatives", ()) or ():
            if neg not in user_negs.setdefault(p.query_id, []):
                user_negs[p.query_id].append(neg)
    for qid, extra in (known_positives or {}).items():
        if qid in positives:
            positives[qid].update(extra)
    for qid, ids in positives.items():
        pos_texts[qid].update(corpus[d] for d in ids if d in corpus)
    missing = sorted({p.positive_id for p in pairs} - set(corpus))
    if missing:
        raise ConfigError(f"mining: {len(missing)} positive ids are not in the corpus (e.g. {missing[:3]}); pass the "
                          "corpus the pairs were built from")
    doc_ids = list(corpus)
    most_pos = max(len(v) for v in positives.values())
    fetch = range_max + most_pos + 8  # room for positives and duplicates that are removed before ranks count
    rankings: dict[str, tuple[dict, dict]] = {}
    if method in ("bm25", "both"):
        rankings["bm25"] = _bm25_rankings(doc_ids, corpus, queries, positives, fetch, bm25_language, show)
    if method not in MINERS:
        rankings[method] = _system_rankings(method, doc_ids, corpus, queries, positives, fetch)
    dense_of: dict[str, dict[str, float]] = {}  # with "both": the cosine of every BM25 candidate too
    if method in ("dense", "both"):
        extra = ({q: [doc_ids[i] for i, _ in r] for q, r in rankings["bm25"][0].items()} if method == "both"
                 else None)
        ranked, dense_of = _dense_rankings(model, doc_ids, corpus, queries, positives, fetch, batch_size, show,
                                           extra)
        rankings["dense"] = (ranked, {q: {d: s[d] for d in positives[q] if d in s} for q, s in dense_of.items()})

    stats = {"method": method, "queries": len(queries), "wanted": num_negatives, "candidates": 0,
             "positive_skipped": 0, "margin_dropped": 0, "rank_guard_dropped": 0, "teacher_scored": 0,
             "teacher_dropped": 0, "kept": 0, "user": 0, "padded": 0, "short_queries": 0}
    groups = groups or {}
    survivors: dict[str, list[Negative]] = {}
    considered: dict[str, set[str]] = {}  # every candidate of a query: random padding never takes a dropped one
    positive_scores: dict[str, float] = {}
    sources = sorted(rankings, key=lambda src: src != "dense")  # "both": dense first, then BM25
    for qid in queries:
        bars = {src: min(pos.get(qid, {}).values(), default=None) for src, (_, pos) in rankings.items()}
        bar = next((bars[src] for src in sources if bars[src] is not None), None)
        if bar is not None:
            positive_scores[qid] = bar
        windows = {}
        for src in sources:
            clean = []
            ranked = rankings[src][0][qid]
            best = None  # rank of the best positive (or a copy of one): the rank guard looks above it
            for rank, (i, s) in enumerate(ranked):
                d = doc_ids[i]
                if d in positives[qid] or corpus[d] in pos_texts[qid]:
                    stats["positive_skipped"] += 1
                    best = rank if best is None else best
                else:
                    clean.append((d, s, best is None))
            windows[src] = clean[range_min:range_max]
        order: list[tuple[str, float, str, bool]] = []
        seen: set[str] = set()
        for rank in range(max(len(w) for w in windows.values())):
            for src in sources:
                if rank < len(windows[src]) and windows[src][rank][0] not in seen:
                    seen.add(windows[src][rank][0])
                    order.append((*windows[src][rank], src))
        stats["candidates"] += len(order)
        considered[qid] = seen
        pos_groups = {groups[p] for p in positives[qid] if p in groups}
        pos_words = [_words(t) for t in pos_texts[qid]] if rank_guard == "same-doc" else []
        kept = []
        for d, s, above, src in order:
            checks = [(s, bars[src])]
            if method == "both" and src == "bm25" and d in dense_of.get(qid, {}):
                checks.append((dense_of[qid][d], bars["dense"]))
            if any(bar is not None and _too_close(sc, bar, absolute_margin, relative_margin) for sc, bar in checks):
                stats["margin_dropped"] += 1
                continue
            if above and rank_guard != "none":
                words = _words(corpus[d]) if rank_guard == "same-doc" else set()
                if rank_guard == "above" or groups.get(d) in pos_groups or any(
                        len(words & pw) >= overlap * max(1, min(len(words), len(pw))) for pw in pos_words):
                    stats["rank_guard_dropped"] += 1
                    continue
            kept.append(Negative(d, corpus[d], s, src))
        survivors[qid] = kept

    if teacher is not None and teacher_margin is not None:
        scorer = teacher if isinstance(teacher, TeacherScorer) else TeacherScorer(teacher, show_progress=show)
        survivors = _teacher_guard(scorer, queries, pair_pos, survivors, num_negatives, teacher_margin,
                                   teacher_candidates, stats)

    result: dict[str, list[Negative]] = {}
    for qid, kept in survivors.items():
        rng = random.Random(f"{seed}:{qid}")
        chosen: list[Negative] = []
        for text in user_negs.get(qid, [])[:num_negatives]:
            if text not in pos_texts[qid]:
                chosen.append(Negative(f"user:{text_key(text)[:16]}", text, None, "user"))
        stats["user"] += len(chosen)
        room = num_negatives - len(chosen)
        pool = [n for n in kept if n.text not in {c.text for c in chosen}]
        hard = rng.sample(pool, min(room, len(pool))) if sampling == "random" else pool[:room]
        if sampling == "random":
            hard.sort(key=lambda n: pool.index(n))
        chosen += hard
        stats["kept"] += len(hard)
        if len(chosen) < num_negatives:
            stats["short_queries"] += 1
            if pad_random:
                used = {c.doc_id for c in chosen}
                for avoid in (considered.get(qid, set()), set()) if pad_with_dropped else (considered.get(qid, set()),):
                    tries = 0
                    while len(chosen) < num_negatives and tries < 50 * num_negatives:
                        tries += 1
                        d = doc_ids[rng.randrange(len(doc_ids))]
                        if d in used or d in avoid or d in positives[qid] or corpus[d] in pos_texts[qid]:
                            continue
                        used.add(d)
                        chosen.append(Negative(d, corpus[d], None, "random"))
                        stats["padded"] += 1
        result[qid] = chosen
    stats["seconds"] = round(time.perf_counter() - t0, 2)
    logger.info("mined %d hard negatives for %d queries with %s (%d candidates: %d positives/duplicates skipped, "
                "%d dropped by the margin guard, %d by the %s rank guard, %d by the teacher; %d padded with random "
                "passages) in %.1f s", stats["kept"], stats["queries"], method, stats["candidates"],
                stats["positive_skipped"], stats["margin_dropped"], stats["rank_guard_dropped"], rank_guard,
                stats["teacher_dropped"], stats["padded"], stats["seconds"])
    return MinedNegatives(result, positive_scores, stats)


def _teacher_guard(scorer: TeacherScorer, queries: dict[str, str], pair_pos: dict[str, list[str]],
                   survivors: dict[str, list[Negative]], n: int, margin: float, n_candidates: int | None,
                   stats: dict[str, Any]) -> dict[str, list[Negative]]:
    """Rescore the first candidates of each query with the teacher; drop those within ``margin`` of (or above)
    the teacher's score of the query's lowest-scoring positive. Candidates past the rescored ones are dropped."""
    limit = n_candidates if n_candidates is not None else 2 * n + 2
    heads = {q: negs[:limit] for q, negs in survivors.items()}
    flat = [(queries[q], neg.text) for q, negs in heads.items() for neg in negs]
    flat += [(queries[q], text) for q in heads for text in pair_pos[q]]
    scores = iter(scorer.score(flat, desc="teacher rescoring candidates"))
    cand_scores = {q: [next(scores) for _ in negs] for q, negs in heads.items()}
    out: dict[str, list[Negative]] = {}
    for q, negs in heads.items():
        bar = min(next(scores) for _ in pair_pos[q])
        stats["teacher_scored"] += len(negs)
        kept = []
        for neg, t in zip(negs, cand_scores[q], strict=True):
            if t > bar - margin:
                stats["teacher_dropped"] += 1
            else:
                kept.append(Negative(neg.doc_id, neg.text, neg.score, neg.source, t))
        out[q] = kept
    return out
