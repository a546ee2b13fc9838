"""What mining returns: :class:`Negative` per mined passage, :class:`MinedNegatives` per run."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


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
