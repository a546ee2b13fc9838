"""``mine_negatives``: the pairs regrouped by query, each miner's ranking, the guards, then the choice and padding
per query (the package doc says how a query's candidates are chosen)."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ragtune._io import text_key
from ragtune.errors import ConfigError
from ragtune.mining.guards import RANK_GUARDS, MarginRankGuard, teacher_guard
from ragtune.mining.rankings import MINERS, rank_corpus
from ragtune.mining.results import MinedNegatives, Negative
from ragtune.teacher import TeacherScorer, _show_progress

if TYPE_CHECKING:
    from ragtune.train.pairs import Pair

logger = logging.getLogger(__name__)


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
    _check_arguments(method, model, rank_guard, overlap, num_negatives, range_min, range_max)
    t0 = time.perf_counter()
    show = _show_progress(show_progress)
    qs = _Queries.of(pairs, corpus, known_positives)
    doc_ids = list(corpus)
    rankings, dense_of = rank_corpus(method, model, doc_ids, corpus, qs.text, qs.positives, range_max, batch_size,
                                     bm25_language, show)
    stats = {"method": method, "queries": len(qs.text), "wanted": num_negatives, "candidates": 0,
             "positive_skipped": 0, "margin_dropped": 0, "rank_guard_dropped": 0, "teacher_scored": 0,
             "teacher_dropped": 0, "kept": 0, "user": 0, "padded": 0, "short_queries": 0}
    guard = MarginRankGuard(method, absolute_margin, relative_margin, rank_guard, groups or {}, overlap)
    sources = sorted(rankings, key=lambda src: src != "dense")  # "both": dense first, then BM25
    survivors: dict[str, list[Negative]] = {}
    considered: dict[str, set[str]] = {}  # every candidate of a query: random padding never takes a dropped one
    positive_scores: dict[str, float] = {}
    for qid in qs.text:
        bars = {src: min(pos.get(qid, {}).values(), default=None) for src, (_, pos) in rankings.items()}
        bar = next((bars[src] for src in sources if bars[src] is not None), None)
        if bar is not None:
            positive_scores[qid] = bar
        order = _candidates(qid, sources, rankings, doc_ids, corpus, qs, range_min, range_max, stats)
        considered[qid] = {d for d, *_ in order}
        survivors[qid] = guard.keep(order, bars, dense_of.get(qid, {}), corpus, qs.positives[qid], qs.pos_texts[qid],
                                    stats)

    if teacher is not None and teacher_margin is not None:
        scorer = teacher if isinstance(teacher, TeacherScorer) else TeacherScorer(teacher, show_progress=show)
        survivors = teacher_guard(scorer, qs.text, qs.pair_pos, survivors, num_negatives, teacher_margin,
                                  teacher_candidates, stats)

    result: dict[str, list[Negative]] = {}
    for qid, kept in survivors.items():
        rng = random.Random(f"{seed}:{qid}")
        chosen = _choose(kept, qs.user_negs.get(qid, []), qs.pos_texts[qid], num_negatives, sampling, rng, stats)
        if len(chosen) < num_negatives:
            stats["short_queries"] += 1
            if pad_random:
                avoid = [considered.get(qid, set())] + ([set()] if pad_with_dropped else [])
                _pad(chosen, avoid, qid, qs, doc_ids, corpus, num_negatives, rng, stats)
        result[qid] = chosen
    stats["seconds"] = round(time.perf_counter() - t0, 2)
    logger.info("mined %d hard negatives for %d queries with %s (%d candidates: %d positives/duplicates skipped, "
                "%d dropped by the margin guard, %d by the %s rank guard, %d by the teacher; %d padded with random "
                "passages) in %.1f s", stats["kept"], stats["queries"], method, stats["candidates"],
                stats["positive_skipped"], stats["margin_dropped"], stats["rank_guard_dropped"], rank_guard,
                stats["teacher_dropped"], stats["padded"], stats["seconds"])
    return MinedNegatives(result, positive_scores, stats)


def _check_arguments(method: str, model: Any, rank_guard: str, overlap: float, num_negatives: int, range_min: int,
                     range_max: int) -> None:
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


@dataclass
class _Queries:
    """The pairs regrouped by query id: its text, every known positive's id and text (a copy of a positive's text
    counts as a positive), the pairs' own positive texts (the teacher's bar) and the negatives given with them."""

    text: dict[str, str] = field(default_factory=dict)
    positives: dict[str, set[str]] = field(default_factory=dict)
    pos_texts: dict[str, set[str]] = field(default_factory=dict)
    pair_pos: dict[str, list[str]] = field(default_factory=dict)
    user_negs: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def of(cls, pairs: Sequence[Pair], corpus: Mapping[str, str],
           known_positives: Mapping[str, Iterable[str]] | None) -> _Queries:
        qs = cls()
        for p in pairs:
            qs.text.setdefault(p.query_id, p.query)
            qs.positives.setdefault(p.query_id, set()).add(p.positive_id)
            qs.pos_texts.setdefault(p.query_id, set()).add(p.positive)
            qs.pair_pos.setdefault(p.query_id, []).append(p.positive)
            for neg in getattr(p, "negatives", ()) or ():
                if neg not in qs.user_negs.setdefault(p.query_id, []):
                    qs.user_negs[p.query_id].append(neg)
        for qid, extra in (known_positives or {}).items():
            if qid in qs.positives:
                qs.positives[qid].update(extra)
        for qid, ids in qs.positives.items():
            qs.pos_texts[qid].update(corpus[d] for d in ids if d in corpus)
        missing = sorted({p.positive_id for p in pairs} - set(corpus))
        if missing:
            raise ConfigError(f"mining: {len(missing)} positive ids are not in the corpus (e.g. {missing[:3]}); pass "
                              "the corpus the pairs were built from")
        return qs

    def is_positive(self, qid: str, doc_id: str, text: str) -> bool:
        return doc_id in self.positives[qid] or text in self.pos_texts[qid]


def _candidates(qid: str, sources: list[str], rankings: dict[str, tuple[dict, dict]], doc_ids: list[str],
                corpus: Mapping[str, str], qs: _Queries, range_min: int, range_max: int,
                stats: dict[str, Any]) -> list[tuple[str, float, bool, str]]:
    """The query's candidates ``(doc id, score, ranked above its best positive, source)``: each source's window
    ``[range_min, range_max)`` after removing positives, the sources interleaved rank by rank, first seen wins."""
    windows = {}
    for src in sources:
        clean = []
        best = None  # rank of the best positive (or a copy of one): the rank guard looks above it
        for rank, (i, s) in enumerate(rankings[src][0][qid]):
            d = doc_ids[i]
            if qs.is_positive(qid, d, corpus[d]):
                stats["positive_skipped"] += 1
                best = rank if best is None else best
            else:
                clean.append((d, s, best is None))
        windows[src] = clean[range_min:range_max]
    order: list[tuple[str, float, bool, str]] = []
    seen: set[str] = set()
    for rank in range(max(len(w) for w in windows.values())):
        for src in sources:
            if rank < len(windows[src]) and windows[src][rank][0] not in seen:
                seen.add(windows[src][rank][0])
                order.append((*windows[src][rank], src))
    stats["candidates"] += len(order)
    return order


def _choose(kept: list[Negative], user: list[str], pos_texts: set[str], n: int, sampling: str, rng: random.Random,
            stats: dict[str, Any]) -> list[Negative]:
    """The query's negatives: those given with its pairs first, then the best (or a sample of the) survivors."""
    chosen = [Negative(f"user:{text_key(text)[:16]}", text, None, "user") for text in user[:n] if text not in pos_texts]
    stats["user"] += len(chosen)
    room = n - len(chosen)
    pool = [neg for neg in kept if neg.text not in {c.text for c in chosen}]
    hard = rng.sample(pool, min(room, len(pool))) if sampling == "random" else pool[:room]
    if sampling == "random":
        hard.sort(key=lambda neg: pool.index(neg))
    stats["kept"] += len(hard)
    return chosen + hard


def _pad(chosen: list[Negative], avoid: list[set[str]], qid: str, qs: _Queries, doc_ids: list[str],
         corpus: Mapping[str, str], n: int, rng: random.Random, stats: dict[str, Any]) -> None:
    """Fill ``chosen`` up to ``n`` with random passages that are neither positives nor in ``avoid[0]``; then, if
    more sets are given (e.g. an empty one), avoiding those instead."""
    used = {c.doc_id for c in chosen}
    for skip in avoid:
        tries = 0
        while len(chosen) < n and tries < 50 * n:
            tries += 1
            d = doc_ids[rng.randrange(len(doc_ids))]
            if d in used or d in skip or qs.is_positive(qid, d, corpus[d]):
                continue
            used.add(d)
            chosen.append(Negative(d, corpus[d], None, "random"))
            stats["padded"] += 1
