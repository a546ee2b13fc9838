"""Pseudo-queries without an LLM: inverse cloze (ICT) and random cropping.

Both turn a corpus of chunks into a generated set in the BEIR shapes (``queries``, ``qrels``) plus per-query
metadata, so ``ragtune run`` can fine-tune fully offline:

- **ICT** (inverse cloze task, Lee et al. 2019): one sentence of a chunk is the query, the chunk is the positive.
  With probability ``mask_prob`` the sentence is cut from the positive when training (``metadata["mask"]``), so
  the model learns topical relevance rather than string matching; the rest of the time it stays, so it also
  learns that exact overlap is a good signal.
- **Crop** (as in Contriever): a random contiguous span of words (characters for Chinese) is the query.

Query ids are ``f"{chunk_id}-ict{i}"`` / ``f"{chunk_id}-crop{i}"`` and each chunk draws from its own random
stream seeded by ``(seed, chunk_id)``, so a query does not change when other chunks are added or removed.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ragtune._io import atomic_write_json
from ragtune.data.beir import (
    BeirDataset,
    Corpus,
    Qrels,
    Queries,
    load_qrels,
    load_queries,
    write_qrels,
    write_queries,
)
from ragtune.data.chunking import split_sentences
from ragtune.errors import ConfigError, DataFormatError
from ragtune.lang import is_chinese

if TYPE_CHECKING:
    from ragtune.config import GenerateConfig
    from ragtune.generate.llm.config import LLMConfig

logger = logging.getLogger(__name__)

_MAX_QUERY_WORDS = 64


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` in ``text`` of the sentences found by
    :func:`ragtune.data.chunking.split_sentences` (the splitter chunks are built with, English and Chinese).

    Spans let ICT cut a query sentence out of its passage without touching the rest of the text.
    """
    spans: list[tuple[int, int]] = []
    pos = 0
    for sentence in split_sentences(text):
        # the splitter only collapses whitespace, so each sentence is found again with flexible blanks
        m = re.compile(r"\s+".join(re.escape(w) for w in sentence.split())).search(text, pos)
        if m is not None:
            spans.append((m.start(), m.end()))
            pos = m.end()
    return spans


def cut_spans(text: str, spans: list[tuple[int, int]] | list[list[int]]) -> str:
    """``text`` without the given character spans; the runs of blanks they leave are collapsed."""
    pieces, pos = [], 0
    for s, e in sorted((int(s), int(e)) for s, e in spans):
        pieces.append(text[pos:max(pos, s)])
        pos = max(pos, e)
    pieces.append(text[pos:])
    return re.sub(r"[ \t]{2,}", " ", "".join(pieces)).strip()


def _squash(text: str) -> str:
    return " ".join(text.split())


def _units(text: str, zh: bool) -> list[str]:
    """Words, or for Chinese the non-space characters: what query lengths are counted in."""
    return [ch for ch in text if not ch.isspace()] if zh else text.split()


@dataclass
class GeneratedSet:
    """Generated queries in the BEIR shapes plus one metadata dict per query (``method``, ``mask``, ...)."""

    queries: Queries = field(default_factory=dict)
    qrels: Qrels = field(default_factory=dict)
    metadata: dict[str, dict] = field(default_factory=dict)
    method: str = ""
    note: str | None = None
    info: dict = field(default_factory=dict)  # LLM runs: model, prompt hash, stats, filter report, failures

    def __len__(self) -> int:
        return len(self.queries)

    def add(self, qid: str, text: str, chunk_id: str, meta: dict) -> None:
        self.queries[qid] = text
        self.qrels[qid] = {chunk_id: 1}
        self.metadata[qid] = meta

    def summary(self) -> str:
        chunks = {d for docs in self.qrels.values() for d in docs}
        return f"{len(self.queries):,} {self.method or 'generated'} queries for {len(chunks):,} chunks"


def _rng(seed: int, chunk_id: str, salt: str) -> random.Random:
    return random.Random(f"{seed}:{salt}:{chunk_id}")


def _ict_candidates(text: str, zh: bool) -> tuple[list[tuple[int, int]], list[int]]:
    """Sentence spans of ``text`` and the indices of those that make reasonable queries (preferred first)."""
    spans = sentence_spans(text)
    min_units = 5 if zh else 3
    good = [i for i, (s, e) in enumerate(spans) if min_units <= len(_units(text[s:e], zh)) <= _MAX_QUERY_WORDS]
    return spans, good or list(range(len(spans)))


def _crop_one(text: str, zh: bool, rng: random.Random, min_words: int, max_words: int) -> tuple[str, int, int]:
    units = _units(text, zh)
    length = rng.randint(min_words, min(max_words, len(units)))
    start = rng.randint(0, len(units) - length)
    piece = units[start:start + length]
    return ("".join(piece) if zh else " ".join(piece)), start, start + length


def _check_args(per_chunk: int, mask_prob: float | None = None) -> None:
    if per_chunk < 1:
        raise DataFormatError(f"per_chunk must be >= 1, got {per_chunk}")
    if mask_prob is not None and not 0.0 <= mask_prob <= 1.0:
        raise DataFormatError(f"mask_prob must be between 0 and 1, got {mask_prob}")


def ict_queries(corpus: Corpus, per_chunk: int = 2, mask_prob: float = 0.9, seed: int = 42, *,
                fallback_crop: tuple[int, int] | None = (8, 24)) -> GeneratedSet:
    """Inverse-cloze queries: up to ``per_chunk`` distinct sentences of each chunk, each judged relevant to it.

    Chunks with fewer than two sentences get crop queries instead (``fallback_crop=(min_words, max_words)``),
    or are skipped when ``fallback_crop`` is None. ``metadata[qid]`` holds ``method``, ``mask`` (cut the sentence
    from the positive when training) and ``span`` (its character offsets in the chunk's ``text``).
    """
    _check_args(per_chunk, mask_prob)
    out = GeneratedSet(method="ict")
    for cid, doc in corpus.items():
        text = doc.get("text") or ""
        zh = is_chinese(text)
        spans, good = _ict_candidates(text, zh)
        rng = _rng(seed, cid, "ict")
        if len(spans) < 2:
            if fallback_crop is not None and len(_units(text, zh)) >= fallback_crop[0]:
                for i in range(per_chunk):
                    q, s, e = _crop_one(text, zh, rng, *fallback_crop)
                    out.add(f"{cid}-crop{i}", q, cid, {"method": "crop", "mask": False, "start": s, "end": e})
            continue
        for i, idx in enumerate(sorted(rng.sample(good, min(per_chunk, len(good))))):
            s, e = spans[idx]
            out.add(f"{cid}-ict{i}", _squash(text[s:e]), cid,
                    {"method": "ict", "mask": rng.random() < mask_prob, "span": [s, e]})
    logger.info("inverse cloze: %s", out.summary())
    return out


def crop_queries(corpus: Corpus, per_chunk: int = 2, min_words: int = 8, max_words: int = 24,
                 seed: int = 42) -> GeneratedSet:
    """Random-crop queries: ``per_chunk`` contiguous spans of ``min_words``..``max_words`` words per chunk.

    Chinese chunks are cropped in characters. Chunks shorter than ``min_words`` are skipped.
    """
    _check_args(per_chunk)
    if not 1 <= min_words <= max_words:
        raise DataFormatError(f"crop lengths need 1 <= min_words <= max_words, got min_words={min_words}, "
                              f"max_words={max_words}")
    out = GeneratedSet(method="crop")
    skipped = 0
    for cid, doc in corpus.items():
        text = doc.get("text") or ""
        zh = is_chinese(text)
        if len(_units(text, zh)) < min_words:
            skipped += 1
            continue
        rng = _rng(seed, cid, "crop")
        for i in range(per_chunk):
            q, s, e = _crop_one(text, zh, rng, min_words, max_words)
            out.add(f"{cid}-crop{i}", q, cid, {"method": "crop", "mask": False, "start": s, "end": e})
    if skipped:
        logger.info("random crop: %d chunks shorter than %d words skipped", skipped, min_words)
    logger.info("random crop: %s", out.summary())
    return out


def eval_set(corpus: Corpus, per_chunk: int = 1, seed: int = 42, name: str = "") -> BeirDataset:
    """An evaluation set built offline: ICT queries whose sentence is REMOVED from the chunk they judge.

    Each chunk with at least two sentences gets up to ``per_chunk`` queries (never all of its sentences). The
    returned corpus is a copy in which those sentences are cut from their chunk, so a system cannot score by
    finding the query verbatim; it has to recognise the passage the sentence came from. Every chunk, with or
    without queries, stays in the corpus as a distractor. ``query_metadata`` holds ``method`` and ``span``
    (offsets in the original text).
    """
    _check_args(per_chunk)
    out_corpus: Corpus = {}
    queries: Queries = {}
    qrels: Qrels = {}
    meta: dict[str, dict] = {}
    for cid, doc in corpus.items():
        text = doc.get("text") or ""
        spans, good = _ict_candidates(text, is_chinese(text))
        picked: list[int] = []
        if len(spans) >= 2:
            rng = _rng(seed, cid, "eval")
            picked = sorted(rng.sample(good, min(per_chunk, len(good), len(spans) - 1)))
        for i, idx in enumerate(picked):
            qid = f"{cid}-ict{i}"
            queries[qid] = _squash(text[spans[idx][0]:spans[idx][1]])
            qrels[qid] = {cid: 1}
            meta[qid] = {"method": "ict", "mask": True, "span": list(spans[idx])}
        out_corpus[cid] = {**doc, "text": cut_spans(text, [spans[i] for i in picked])}
    if not queries:
        raise DataFormatError(f"eval_set: none of the {len(corpus):,} chunks has two or more sentences, so no "
                              "evaluation query could be made. Use longer chunks (ingest.chunk_tokens) or give "
                              "a BEIR directory with real queries.")
    logger.info("evaluation set: %d ICT queries (sentence removed from its chunk) over %d chunks",
                len(queries), len(out_corpus))
    return BeirDataset(out_corpus, queries, qrels, meta, name=name)


def with_ict_queries(ds: BeirDataset, n_docs: int, exclude: Iterable[str] = (), seed: int = 42) -> BeirDataset:
    """``ds`` plus inverse-cloze pseudo-queries for ``n_docs`` of its documents, drawn at random (``seed``) from
    those not in ``exclude``: one sentence each (:func:`ict_queries`, ``per_chunk=1``; a crop for a one-sentence
    document), judged relevant to its document, which keeps the sentence. Used to train a reranker on generated
    questions and declarative sentences side by side. A pseudo-query whose id ``ds`` already has is left out."""
    if n_docs < 0:
        raise DataFormatError(f"n_docs must be >= 0, got {n_docs}")
    skip = set(exclude)
    pool = sorted(d for d in ds.corpus if d not in skip)
    picked = random.Random(seed).sample(pool, min(n_docs, len(pool)))
    ict = ict_queries({d: ds.corpus[d] for d in picked}, per_chunk=1, seed=seed)
    new = [q for q in ict.queries if q not in ds.queries]
    return BeirDataset(ds.corpus, {**ds.queries, **{q: ict.queries[q] for q in new}},
                       {**ds.qrels, **{q: ict.qrels[q] for q in new}},
                       {**ds.query_metadata, **{q: ict.metadata[q] for q in new}}, name=f"{ds.name}+ict")


# --- dispatch and files -------------------------------------------------------------------------------------

AUTO_NOTE = ("no LLM configured: using inverse-cloze pseudo-queries (sentences of each chunk), which teach the "
             "model your vocabulary but are not real questions. For real questions set RAGTUNE_LLM_MODEL plus "
             "OPENAI_BASE_URL (any OpenAI-compatible server) or OPENAI_API_KEY, or llm.local_model in ragtune.yaml")


def generate_queries(corpus: Corpus, config: GenerateConfig | None = None, *, llm: LLMConfig | None = None,
                     cache_dir: str | Path = ".ragtune-cache") -> GeneratedSet:
    """Training queries for ``corpus`` by ``config.method``: ``ict``, ``crop``, ``llm`` or ``auto``.

    ``auto`` uses the LLM generator when ``llm`` (or the environment: ``RAGTUNE_LLM_MODEL`` with
    ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``) configures one, and otherwise falls back to ICT pseudo-queries with a
    warning, recording why in :attr:`GeneratedSet.note`. LLM requests are cached in ``cache_dir`` so a rerun sends
    only what did not finish.
    """
    from ragtune.config import GenerateConfig
    from ragtune.generate.llm.config import LLMConfig

    config = config or GenerateConfig()
    if config.method in ("llm", "auto"):
        llm = llm or LLMConfig()
        if llm.is_configured():
            from ragtune.generate.llm.questions import generate_llm_questions

            llm = llm.model_copy(update={"per_chunk": config.per_chunk, "seed": config.seed})
            return generate_llm_questions(corpus, llm, cache_dir).to_generated_set()
        if config.method == "llm":
            raise ConfigError(f"generate.method='llm' but {llm.describe()}")
    if config.method == "crop":
        return crop_queries(corpus, config.per_chunk, config.crop_min_words, config.crop_max_words, config.seed)
    gs = ict_queries(corpus, config.per_chunk, config.mask_prob, config.seed,
                     fallback_crop=(config.crop_min_words, config.crop_max_words))
    if config.method == "auto":
        logger.warning("%s", AUTO_NOTE)
        gs.note = AUTO_NOTE
    return gs


_QUERIES, _QRELS, _INFO = "gen-queries.jsonl", "gen-qrels.tsv", "gen-info.json"


def write_generated(gs: GeneratedSet, out_dir: str | Path) -> Path:
    """Write ``gen-queries.jsonl`` (with metadata), ``gen-qrels.tsv`` and ``gen-info.json`` (method, note)."""
    out = Path(out_dir)
    write_queries(out / _QUERIES, gs.queries, gs.metadata)
    write_qrels(out / _QRELS, gs.qrels)
    atomic_write_json(out / _INFO, {**gs.info, "method": gs.method, "note": gs.note, "queries": len(gs.queries),
                                    "chunks": len({d for docs in gs.qrels.values() for d in docs})})
    return out


def load_generated(directory: str | Path) -> GeneratedSet:
    """Read a set written by :func:`write_generated` (``gen-info.json`` is optional)."""
    root = Path(directory)
    meta: dict[str, dict] = {}
    queries = load_queries(root / _QUERIES, metadata=meta)
    qrels = load_qrels(root / _QRELS)
    info = json.loads((root / _INFO).read_text(encoding="utf-8")) if (root / _INFO).is_file() else {}
    extra = {k: v for k, v in info.items() if k not in ("method", "note", "queries", "chunks")}
    return GeneratedSet(queries, qrels, meta, method=info.get("method", ""), note=info.get("note"), info=extra)
