"""The filter chain for generated questions: each step drops what fails it and says how many and why.

Steps, in order (cheap first, the retriever last)::

    parse       replies that held no question (counted per request; reported, nothing to drop here)
    language    the question is not in the corpus language
    standalone  the question points at the text it came from ("the passage", "this study", "本文", ...)
    length      too few / too many words (Chinese: characters)
    copy        the question copies its chunk (share of its word n-grams, Chinese character n-grams, found in it)
    exact-dup   the same question after normalising case, spaces and punctuation (the first one is kept)
    near-dup    token-set Jaccard similarity >= ``near_duplicate`` with an earlier question
    roundtrip   a retriever does not rank the question's source chunk in its top ``roundtrip_k``

It works on any generated set in the BEIR shapes, LLM questions and pseudo-queries alike (for inverse-cloze
queries, which are sentences of their chunk by design, switch ``max_copy_overlap`` off). Kept questions get their
verdicts in ``metadata[qid]["filters"]``; dropped ones are listed in :attr:`FilterReport.dropped`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field

from ragtune.config import _Config
from ragtune.data.beir import Corpus, Qrels, Queries
from ragtune.errors import ConfigError
from ragtune.lang import detect_language

logger = logging.getLogger(__name__)

# A retriever for the round-trip check: given {qid: text} and k, the ranked doc ids per query (a list), or a run
# ({qid: {doc_id: score}}).
Retriever = Callable[[Queries, int], Mapping[str, Any]]

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
# Questions that only make sense next to their passage; a searcher never writes these. "In the context of X" and
# "the study on X" name their subject, so they stay ("the study's", "the study suggest", "this study" do not).
_NAMES_ITS_SUBJECT = (r"(?:on|of|in|into|about|regarding|concerning|by|titled|entitled|comparing|investigating|"
                      r"examining|evaluating|assessing)\b")
_POINTS_AT_TEXT = re.compile(
    r"\b(?:the|this|given|above|following|provided)\s+(?:passage|text|context(?!\s+of\b)|excerpt|paragraph|"
    r"article|document|abstract)\b|\bthis\s+(?:study|paper)\b|"
    rf"\bthe\s+(?:study|paper)\b(?!\s+{_NAMES_ITS_SUBJECT})|\bthe\s+authors?\b|"
    r"\bthis\s+(?:finding|method|approach|work|research|review|experiment|trial)s?\b|"
    r"本文|文中|上文|原文|这段(?:文字|话|内容)|该(?:段|文|研究)|材料中", re.I)


class FilterConfig(_Config):
    enabled: bool = True
    min_words: int = Field(3, ge=1, description="shortest question in words (English and other languages)")
    max_words: int = Field(40, ge=1)
    min_chars_zh: int = Field(4, ge=1, description="shortest Chinese question in characters")
    max_chars_zh: int = Field(80, ge=1)
    language: bool = Field(True, description="drop questions not in the corpus language")
    standalone: bool = Field(True, description="drop questions that point at their passage ('the passage', "
                                               "'this study', '本文')")
    max_copy_overlap: float | None = Field(0.6, gt=0, le=1, description="drop when this share of the "
                                           "question's n-grams occurs in its chunk (None = off)")
    copy_ngram: int = Field(3, ge=1, le=8, description="word n-gram size of the copy check")
    copy_ngram_zh: int = Field(4, ge=1, le=8, description="character n-gram size for Chinese")
    dedupe: bool = Field(True, description="drop exact duplicates (after normalisation)")
    near_duplicate: float | None = Field(0.85, gt=0, le=1, description="Jaccard threshold (None = off)")
    roundtrip: Literal["bm25", "none"] = Field("bm25", description="retriever of the round-trip check")
    roundtrip_k: int = Field(10, ge=1, description="keep a question when its chunk is in this top k")


@dataclass
class FilterStep:
    name: str
    dropped: int = 0
    reasons: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def drop(self, reason: str, example: str) -> None:
        self.dropped += 1
        self.reasons[reason] += 1
        if len(self.examples) < 5:
            self.examples.append(example)


@dataclass
class FilterReport:
    """Per-step counts and reasons; ``dropped`` maps each dropped question id to its text, step and reason."""

    input: int = 0
    kept: int = 0
    steps: list[FilterStep] = field(default_factory=list)
    dropped: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"input": self.input, "kept": self.kept,
                "steps": [{"name": s.name, "dropped": s.dropped, "reasons": dict(s.reasons),
                           "examples": s.examples} for s in self.steps]}

    def to_markdown(self) -> str:
        lines = ["| step | dropped | why |", "|---|---:|---|"]
        for s in self.steps:
            why = "; ".join(f"{r} ({n})" for r, n in s.reasons.most_common(3)) or "-"
            lines.append(f"| {s.name} | {s.dropped} | {why} |")
        lines.append(f"| **kept** | **{self.kept}** of {self.input} | |")
        return "\n".join(lines)

    def __str__(self) -> str:
        parts = ", ".join(f"{s.name} -{s.dropped}" for s in self.steps if s.dropped)
        return f"kept {self.kept} of {self.input} questions" + (f" ({parts})" if parts else "")


@dataclass
class FilteredSet:
    queries: Queries
    qrels: Qrels
    metadata: dict[str, dict]
    report: FilterReport


# --- text helpers -------------------------------------------------------------------------------------------


def normalize(text: str) -> str:
    """Lower case, punctuation removed, spaces collapsed: what counts as 'the same question'."""
    return " ".join(_WORD.findall(text.lower()))


def tokens(text: str) -> list[str]:
    """Words, with runs of Chinese characters turned into character bigrams (single characters if alone)."""
    out: list[str] = []
    for w in _WORD.findall(text.lower()):
        if _CJK.search(w):
            chars = list(w)
            out.extend(chars if len(chars) == 1 else [a + b for a, b in zip(chars, chars[1:], strict=False)])
        else:
            out.append(w)
    return out


def _units(text: str, zh: bool) -> list[str]:
    """Words, or for Chinese the letters and digits one character each: what lengths and n-grams count."""
    if zh:
        return [ch for ch in text.lower() if ch.isalnum()]
    return _WORD.findall(text.lower())


def _ngrams(units: list[str], n: int) -> set[tuple[str, ...]]:
    n = max(1, min(n, len(units)))
    return {tuple(units[i:i + n]) for i in range(len(units) - n + 1)}


def copy_overlap(question: str, chunk: str, n: int, zh: bool) -> float:
    """Share of the question's n-grams (words; characters for Chinese) that also occur in ``chunk``."""
    q = _units(question, zh)
    if not q:
        return 0.0
    n = min(n, len(q))
    qgrams = _ngrams(q, n)
    return len(qgrams & _ngrams(_units(chunk, zh), n)) / len(qgrams)


# --- the chain ----------------------------------------------------------------------------------------------


def filter_questions(queries: Queries, qrels: Qrels, corpus: Corpus, config: FilterConfig | None = None, *,
                     metadata: dict[str, dict] | None = None, language: str | None = None,
                     retriever: Retriever | None = None,
                     parse_failures: Mapping[str, str] | None = None) -> FilteredSet:
    """Run the chain over ``queries`` (judged by ``qrels`` against ``corpus``); inputs are not modified.

    ``language`` is the corpus language (default: detected); ``retriever`` replaces the built-in BM25 of the
    round-trip check; ``parse_failures`` ({chunk_id: reason}) is only counted into the report's ``parse`` step.
    """
    config = config or FilterConfig()
    if language is None:
        language = detect_language(_doc_text(d) for d in corpus.values())
    chain = _Chain(queries, qrels, corpus, config, metadata or {}, language)
    for cid, reason in (parse_failures or {}).items():
        chain.parse.drop(reason, cid)
    if config.enabled:
        if config.language:
            chain.run("language", chain.wrong_language)
        if config.standalone:
            chain.run("standalone", chain.points_at_text)
        chain.run("length", chain.length)
        if config.max_copy_overlap is not None:
            chain.run("copy", chain.copies)
        if config.dedupe:
            chain.run("exact-dup", chain.exact_duplicate)
        if config.near_duplicate is not None:
            dupes = near_duplicates({q: queries[q] for q in chain.alive}, config.near_duplicate)
            chain.run("near-dup", lambda qid: f"near duplicate of {dupes[qid]}" if qid in dupes else None)
        if retriever is not None or config.roundtrip == "bm25":
            chain.roundtrip(retriever or bm25_retriever(corpus, language))
    return chain.result()


class _Chain:
    """The state of one pass: the questions still alive, their metadata, and the report being written."""

    def __init__(self, queries: Queries, qrels: Qrels, corpus: Corpus, config: FilterConfig,
                 metadata: Mapping[str, dict], language: str):
        self.queries, self.qrels, self.corpus, self.config = queries, qrels, corpus, config
        self.zh = language == "zh"
        self.language = language
        self.meta = {qid: dict(metadata.get(qid, {})) for qid in queries}
        self.report = FilterReport(input=len(queries))
        self.parse = FilterStep("parse")
        self.report.steps.append(self.parse)
        self.alive = [qid for qid in queries if qrels.get(qid)]
        self._seen: dict[str, str] = {}

    def run(self, name: str, check: Callable[[str], str | None]) -> None:
        step = FilterStep(name)
        kept = []
        for qid in self.alive:
            reason = check(qid)
            if reason is None:
                kept.append(qid)
                continue
            step.drop(reason, self.queries[qid])
            self.report.dropped[qid] = {"text": self.queries[qid], "step": name, "reason": reason,
                                        "source": sorted(self.qrels[qid])}
        self.alive = kept
        self.report.steps.append(step)
        if step.dropped:
            logger.info("filter %-9s dropped %d (%s)", name, step.dropped,
                        ", ".join(f"{r}: {n}" for r, n in step.reasons.most_common(3)))

    def _verdict(self, qid: str) -> dict[str, Any]:
        return self.meta[qid].setdefault("filters", {})

    def points_at_text(self, qid: str) -> str | None:
        m = _POINTS_AT_TEXT.search(self.queries[qid])
        return f"refers to its source text ({m.group(0)!r})" if m else None

    def length(self, qid: str) -> str | None:
        c = self.config
        q_zh = detect_language(self.queries[qid]) == "zh"
        n = len(_units(self.queries[qid], q_zh))
        lo, hi = (c.min_chars_zh, c.max_chars_zh) if q_zh else (c.min_words, c.max_words)
        unit = "characters" if q_zh else "words"
        return f"shorter than {lo} {unit}" if n < lo else f"longer than {hi} {unit}" if n > hi else None

    def wrong_language(self, qid: str) -> str | None:
        got = detect_language(self.queries[qid])
        return None if got == self.language else f"not {self.language} ({got})"

    def copies(self, qid: str) -> str | None:
        n = self.config.copy_ngram_zh if self.zh else self.config.copy_ngram
        best = max(copy_overlap(self.queries[qid], _doc_text(self.corpus.get(d, {})), n, self.zh)
                   for d in self.qrels[qid])
        self._verdict(qid)["copy_overlap"] = round(best, 3)
        if best >= self.config.max_copy_overlap:  # type: ignore[operator]
            return f"{best:.0%} of its {n}-grams copied from the chunk"
        return None

    def exact_duplicate(self, qid: str) -> str | None:
        key = normalize(self.queries[qid])
        if key in self._seen:
            return f"same as {self._seen[key]}"
        self._seen[key] = qid
        return None

    def roundtrip(self, search: Retriever) -> None:
        k = self.config.roundtrip_k
        ranks = roundtrip_ranks({q: self.queries[q] for q in self.alive}, self.qrels, search, k)

        def check(qid: str) -> str | None:
            self._verdict(qid)["roundtrip_rank"] = ranks.get(qid)
            return None if qid in ranks else f"source chunk not in the retriever's top {k}"

        self.run("roundtrip", check)

    def result(self) -> FilteredSet:
        self.report.kept = len(self.alive)
        for qid in self.alive:
            self._verdict(qid)["passed"] = True
        logger.info("filters: %s", self.report)
        q = self.queries
        return FilteredSet({i: q[i] for i in self.alive}, {i: self.qrels[i] for i in self.alive},
                           {i: self.meta[i] for i in self.alive}, self.report)


def filter_set(gs: Any, corpus: Corpus, config: FilterConfig | None = None,
               **kwargs: Any) -> tuple[Any, FilterReport]:
    """Filter a generated-set dataclass (``queries``, ``qrels``, ``metadata`` fields); returns a filtered copy."""
    out = filter_questions(gs.queries, gs.qrels, corpus, config, metadata=gs.metadata, **kwargs)
    return dataclasses.replace(gs, queries=out.queries, qrels=out.qrels, metadata=out.metadata), out.report


def _doc_text(doc: Mapping[str, Any]) -> str:
    title = str(doc.get("title") or "")
    text = str(doc.get("text") or "")
    return f"{title}\n{text}" if title else text


# --- near duplicates ----------------------------------------------------------------------------------------


def near_duplicates(queries: Queries, threshold: float) -> dict[str, str]:
    """``{qid: earlier_qid}`` for every question whose token-set Jaccard with an earlier one is >= threshold.

    Exact all-pairs join with prefix filtering (two sets with Jaccard >= t share a token among the first
    ``|a| - ceil(t*|a|) + 1`` tokens of each, in a global rarest-first order), so it stays fast on large sets;
    written here because no kept library does set-similarity joins.
    """
    sets = {qid: set(tokens(text)) for qid, text in queries.items()}
    df = Counter(t for s in sets.values() for t in s)
    index: dict[str, list[str]] = defaultdict(list)
    out: dict[str, str] = {}
    for qid, s in sets.items():
        if not s:
            continue
        order = sorted(s, key=lambda t: (df[t], t))
        prefix = order[:len(order) - math.ceil(threshold * len(order)) + 1]
        candidates: dict[str, None] = {}
        for t in prefix:
            for other in index[t]:
                candidates[other] = None
        for other in candidates:
            o = sets[other]
            inter = len(s & o)
            if inter / (len(s) + len(o) - inter) >= threshold:
                out[qid] = other
                break
        else:
            for t in prefix:
                index[t].append(qid)
    return out


# --- round trip ---------------------------------------------------------------------------------------------


def roundtrip_ranks(queries: Queries, qrels: Qrels, retriever: Retriever, k: int) -> dict[str, int]:
    """1-based rank of the best-ranked source chunk (``qrels``) of each question in the retriever's top ``k``.

    Questions whose sources are all outside the top ``k`` are absent from the result.
    """
    if not queries:
        return {}
    results = retriever(queries, k)
    ranks: dict[str, int] = {}
    for qid in queries:
        hits = results.get(qid) or []
        ranked = sorted(hits, key=lambda d: -hits[d]) if isinstance(hits, Mapping) else list(hits)
        sources = qrels.get(qid) or {}
        for rank, did in enumerate(ranked[:k], 1):
            if did in sources:
                ranks[qid] = rank
                break
    return ranks


def bm25_retriever(corpus: Corpus, language: str = "en") -> Retriever:
    """A BM25 (bm25s) retriever over ``corpus``: English words stemmed without stop words, Chinese by jieba."""
    import bm25s

    ids = list(corpus)
    if not ids:
        raise ConfigError("roundtrip filter: the corpus is empty, so no question can be checked against it")
    tokenize = _tokenizer(language)
    engine = bm25s.BM25()
    engine.index([tokenize(_doc_text(corpus[d])) or ["\u2205"] for d in ids], show_progress=False)

    def search(queries: Queries, k: int) -> dict[str, list[str]]:
        qids = list(queries)
        toks = [tokenize(queries[q]) or ["\u2205"] for q in qids]
        docs, _ = engine.retrieve(toks, k=min(k, len(ids)), show_progress=False)
        return {q: [ids[i] for i in row] for q, row in zip(qids, docs.tolist(), strict=True)}

    return search


def _tokenizer(language: str) -> Callable[[str], list[str]]:
    if language == "zh":
        import jieba

        jieba.setLogLevel(logging.WARNING)
        return lambda text: [t for t in jieba.lcut_for_search(text.lower()) if _WORD.fullmatch(t)]
    import bm25s
    import Stemmer

    stemmer = Stemmer.Stemmer("english")
    stop = set(bm25s.stopwords.STOPWORDS_EN)
    return lambda text: stemmer.stemWords([w for w in _WORD.findall(text.lower()) if w not in stop])
