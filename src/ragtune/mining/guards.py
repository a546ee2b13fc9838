"""The false-negative guards: candidates too close to the positive on the miner's score (margins), candidates ranked
above it that likely answer the query too (rank guard), and the teacher's rescoring."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ragtune.mining.results import Negative
from ragtune.teacher import TeacherScorer

RANK_GUARDS = ("none", "same-doc", "above")


def word_set(text: str) -> set[str]:
    """The text's lower-cased words (the same-doc guard's overlap counts them)."""
    return set(re.findall(r"\w+", text.lower()))


def too_close(score: float, positive: float, absolute: float | None, relative: float | None) -> bool:
    """Whether a candidate's score is within the absolute or relative margin of (or above) the positive's."""
    if absolute is not None and score > positive - absolute:
        return True
    return relative is not None and score > positive - abs(positive) * relative


@dataclass
class MarginRankGuard:
    """The false-negative guards on the miner's own scores: the margin to the positive and the rank guard."""

    method: str
    absolute_margin: float | None
    relative_margin: float | None
    rank_guard: str
    groups: Mapping[str, str]
    overlap: float

    def keep(self, order: list[tuple[str, float, bool, str]], bars: dict[str, float | None],
             dense_of: dict[str, float], corpus: Mapping[str, str], positives: set[str],
             pos_texts: set[str], stats: dict[str, Any]) -> list[Negative]:
        """The candidates of one query (``(doc id, score, above its best positive, source)``, best first) that
        pass: not within the margin of the positive's score (``bars``: per source; with ``both`` a BM25 candidate's
        cosine must pass the dense bar too) and, when ranked above the positive, not a likely positive."""
        pos_groups = {self.groups[p] for p in positives if p in self.groups}
        pos_words = [word_set(t) for t in pos_texts] if self.rank_guard == "same-doc" else []
        kept = []
        for d, s, above, src in order:
            checks = [(s, bars[src])]
            if self.method == "both" and src == "bm25" and d in dense_of:
                checks.append((dense_of[d], bars["dense"]))
            if any(bar is not None and too_close(sc, bar, self.absolute_margin, self.relative_margin)
                   for sc, bar in checks):
                stats["margin_dropped"] += 1
                continue
            if above and self.rank_guard != "none" and self._likely_positive(corpus, d, pos_groups, pos_words):
                stats["rank_guard_dropped"] += 1
                continue
            kept.append(Negative(d, corpus[d], s, src))
        return kept

    def _likely_positive(self, corpus: Mapping[str, str], d: str, pos_groups: set[str],
                         pos_words: list[set[str]]) -> bool:
        if self.rank_guard == "above" or self.groups.get(d) in pos_groups:
            return True
        words = word_set(corpus[d])
        return any(len(words & pw) >= self.overlap * max(1, min(len(words), len(pw))) for pw in pos_words)


def teacher_guard(scorer: TeacherScorer, queries: dict[str, str], pair_pos: dict[str, list[str]],
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
