"""Training pairs for the embedding trainer: (query, positive chunk) from BEIR data or a user's pairs file.

:func:`build_pairs` turns a corpus, queries and qrels into :class:`Pair` objects (cutting an inverse-cloze query
sentence out of its positive when the generator asked for it); :func:`load_pairs` reads supervised pairs from a
``.jsonl`` file with errors that name the line; :func:`training_pairs` accepts either and also returns the
passages negatives may be mined from and each query's known positives.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragtune.data.beir import BeirDataset, Corpus, Qrels, Queries
from ragtune.errors import DataFormatError
from ragtune.retrieval.bm25 import doc_text

passage_text = doc_text  # how a chunk is shown to the encoder: "title text" (BEIR's convention), or just the text


@dataclass(frozen=True)
class Pair:
    """One training example: a query, the text of its positive chunk, the chunk id and its source document."""

    query: str
    positive: str
    positive_id: str
    doc_id: str
    query_id: str = ""
    negatives: tuple[str, ...] = ()  # negatives given with a supervised pair (load_pairs)


def _masked_text(text: str, query: str, meta: dict) -> str:
    """``text`` without the ICT query sentence: by its recorded span, else by exact match; unchanged if absent."""
    from ragtune.generate.pseudo import cut_spans

    span = meta.get("span")
    if isinstance(span, list | tuple) and len(span) == 2 and " ".join(text[span[0]:span[1]].split()) == query:
        return cut_spans(text, [tuple(span)])
    squashed = " ".join(text.split())
    if query and query in squashed:
        return " ".join(squashed.replace(query, " ", 1).split())
    return text


def build_pairs(corpus: Corpus, queries: Queries, qrels: Qrels, metadata: dict[str, dict] | None = None,
                seed: int = 42) -> list[Pair]:
    """One :class:`Pair` per positive judgement (score > 0) whose query and chunk exist, shuffled by ``seed``.

    ``positive_id`` is the chunk id (a chunk is a BEIR document); ``doc_id`` is the chunk's ``doc`` field (the
    source file it was cut from) when present, else the chunk id. When ``metadata[qid]["mask"]`` is true (ICT),
    the query sentence is cut from the positive passage. Duplicate (query text, chunk) pairs are kept once.
    """
    metadata = metadata or {}
    pairs: list[Pair] = []
    seen: set[tuple[str, str]] = set()
    for qid, judged in qrels.items():
        query = queries.get(qid)
        if not query:
            continue
        meta = metadata.get(qid) or {}
        for did, score in judged.items():
            doc = corpus.get(did)
            if score <= 0 or doc is None or (query, did) in seen:
                continue
            seen.add((query, did))
            text = doc.get("text") or ""
            if meta.get("mask"):
                text = _masked_text(text, query, meta)
            positive = passage_text({"title": doc.get("title"), "text": text})
            pairs.append(Pair(query, positive, did, str(doc.get("doc") or did), qid))
    random.Random(seed).shuffle(pairs)
    return pairs


def as_training_data(train: Any) -> tuple[Corpus, Queries, Qrels, dict[str, dict]]:
    if isinstance(train, BeirDataset):
        return train.corpus, train.queries, train.qrels, train.query_metadata
    if isinstance(train, tuple | list) and len(train) in (3, 4):
        corpus, queries, qrels, *rest = train
        return corpus, queries, qrels, (rest[0] if rest else None) or {}
    raise TypeError("train must be a BeirDataset or a tuple (corpus, queries, qrels[, metadata]), a list of Pair, "
                    f"or the path of a pairs .jsonl file; got {type(train).__name__}")


def load_pairs(path: str | Path) -> list[Pair]:
    """Read user-provided training pairs: one JSON object per line, ``{"query": str, "positive": str}`` with an
    optional ``"negatives": [str, ...]``. Ids are derived from the texts (the same passage gets the same id).

    A bad line is a :class:`~ragtune.errors.DataFormatError` naming ``file:line`` and what to fix. For BEIR qrels
    (e.g. ``qrels_train.tsv``) use ``load_beir(DIR, qrels=...)`` (CLI: ``--data DIR --qrels FILE``) instead.
    """
    from ragtune._io import open_text, text_key

    p = Path(path)
    if not p.is_file():
        raise DataFormatError(f"--pairs {p}: file not found")
    if p.suffix in (".tsv", ".txt"):
        raise DataFormatError(f"--pairs {p}: expected a .jsonl file of {{\"query\", \"positive\"}} objects; for "
                              "qrels use --data DIR --qrels FILE (e.g. --qrels qrels_train.tsv)")
    pairs: list[Pair] = []
    seen: set[tuple[str, str]] = set()
    with open_text(p) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{p}:{lineno}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataFormatError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(rec, dict):
                raise DataFormatError(f"{where}: expected a JSON object with \"query\" and \"positive\", got "
                                      f"{type(rec).__name__}")
            unknown = sorted(set(rec) - {"query", "positive", "negatives"})
            if unknown:
                raise DataFormatError(f"{where}: unknown field(s) {unknown}; a line has \"query\", \"positive\" "
                                      "and optionally \"negatives\"")
            for name in ("query", "positive"):
                if not isinstance(rec.get(name), str) or not rec[name].strip():
                    raise DataFormatError(f"{where}: \"{name}\" must be a non-empty string, got "
                                          f"{rec.get(name)!r}")
            negs = rec.get("negatives", [])
            if not isinstance(negs, list) or not all(isinstance(n, str) and n.strip() for n in negs):
                raise DataFormatError(f"{where}: \"negatives\" must be a list of non-empty strings")
            query, positive = rec["query"].strip(), rec["positive"].strip()
            if (query, positive) in seen:
                continue
            seen.add((query, positive))
            pid = f"p{text_key(positive)[:16]}"
            pairs.append(Pair(query, positive, pid, pid, f"q{text_key(query)[:16]}",
                              tuple(n.strip() for n in negs if n.strip() != positive)))
    if not pairs:
        raise DataFormatError(f"--pairs {p}: no pairs (the file is empty)")
    return pairs


def training_pairs(train: Any, seed: int) -> tuple[list[Pair], dict[str, str], dict[str, set[str]]]:
    """``(pairs, {passage id: text} to mine from, {query id: known positive ids})`` for any accepted ``train``."""
    if isinstance(train, Path) or (isinstance(train, str) and train.endswith((".jsonl", ".jsonl.gz"))):
        train = load_pairs(train)
    if isinstance(train, list | tuple) and train and all(isinstance(p, Pair) for p in train):
        from ragtune._io import text_key

        pairs = list(train)
        texts: dict[str, str] = {}
        known: dict[str, set[str]] = {}
        for p in pairs:
            texts[p.positive_id] = p.positive
            known.setdefault(p.query_id, set()).add(p.positive_id)
            for n in p.negatives:  # user negatives are candidates for every query, like positives
                texts.setdefault(f"p{text_key(n)[:16]}", n)
        return pairs, texts, known
    corpus, queries, qrels, meta = as_training_data(train)
    pairs = build_pairs(corpus, queries, qrels, meta, seed=seed)
    known = {q: {d for d, s in docs.items() if s > 0} for q, docs in qrels.items()}
    return pairs, {d: passage_text(doc) for d, doc in corpus.items()}, known
