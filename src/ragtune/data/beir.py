"""Read, validate and write the four BEIR shapes that every stage of ragtune exchanges.

- corpus:  ``{doc_id: {"title": str, "text": str, **metadata}}``  (``corpus.jsonl[.gz]``: ``_id``, ``title``, ``text``)
- queries: ``{query_id: text}``                                    (``queries.jsonl``: ``_id``, ``text``, ``metadata``)
- qrels:   ``{query_id: {doc_id: int}}``                           (``qrels/<split>.tsv``: ``query-id corpus-id score``)
- run:     ``{query_id: {doc_id: float}}``                         (JSON, or TREC run format ``*.trec``/``*.run``)

Readers never stop at the first bad line: every problem becomes a :class:`DataIssue` naming file and line, the
record is skipped when that is safe, and ``strict=True`` turns the first problem into a
:class:`~ragtune.errors.DataFormatError` instead.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ragtune._io import atomic_open, open_text
from ragtune.errors import DataFormatError

logger = logging.getLogger(__name__)

Corpus = dict[str, dict]
Queries = dict[str, str]
Qrels = dict[str, dict[str, int]]
Run = dict[str, dict[str, float]]


@dataclass(frozen=True)
class DataIssue:
    """One problem found in an input file; ``str()`` gives ``file:line: message``."""

    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.message}"


class _Collector:
    """Collects issues; raises on the first one when strict."""

    def __init__(self, issues: list[DataIssue] | None, strict: bool):
        self.issues = issues if issues is not None else []
        self.strict = strict

    def add(self, file: Path | str, line: int | None, message: str) -> None:
        issue = DataIssue(str(file), line, message)
        if self.strict:
            raise DataFormatError(str(issue))
        logger.warning("%s", issue)
        self.issues.append(issue)


def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise DataFormatError(f"{what} file not found: {path}. Check the path (a BEIR directory has "
                              "corpus.jsonl, queries.jsonl and qrels/test.tsv or qrels.tsv).")


def _iter_jsonl(path: Path, col: _Collector) -> Iterable[tuple[int, dict]]:
    with open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                col.add(path, lineno, f"invalid JSON ({exc.msg} at column {exc.colno}); line skipped")
                continue
            if not isinstance(rec, dict):
                col.add(path, lineno, f"expected a JSON object, got {type(rec).__name__}; line skipped")
                continue
            yield lineno, rec


def _record_id(rec: dict, path: Path, lineno: int, col: _Collector, seen: set[str]) -> str | None:
    raw = rec.get("_id", rec.get("id"))
    if raw is None or str(raw).strip() == "":
        col.add(path, lineno, 'missing "_id"; line skipped (every record needs a unique "_id")')
        return None
    rid = str(raw)
    if rid in seen:
        col.add(path, lineno, f'duplicate "_id" {rid!r}; the first occurrence is kept')
        return None
    seen.add(rid)
    return rid


def load_corpus(path: str | Path, *, strict: bool = False, issues: list[DataIssue] | None = None) -> Corpus:
    """Load ``corpus.jsonl`` (or ``.jsonl.gz``). Extra fields are kept as metadata."""
    path = Path(path)
    _require_file(path, "corpus")
    col = _Collector(issues, strict)
    corpus: Corpus = {}
    seen: set[str] = set()
    for lineno, rec in _iter_jsonl(path, col):
        rid = _record_id(rec, path, lineno, col, seen)
        if rid is None:
            continue
        text = rec.get("text")
        if not isinstance(text, str):
            col.add(path, lineno, f'document {rid!r} has no string "text"; line skipped')
            continue
        doc = {k: v for k, v in rec.items() if k not in ("_id", "id")}
        doc["title"] = str(rec.get("title") or "")
        corpus[rid] = doc
    return corpus


def load_queries(
    path: str | Path,
    *,
    strict: bool = False,
    issues: list[DataIssue] | None = None,
    metadata: dict[str, dict] | None = None,
) -> Queries:
    """Load ``queries.jsonl``. Pass a dict as ``metadata`` to also collect each query's ``metadata`` object."""
    path = Path(path)
    _require_file(path, "queries")
    col = _Collector(issues, strict)
    queries: Queries = {}
    seen: set[str] = set()
    for lineno, rec in _iter_jsonl(path, col):
        rid = _record_id(rec, path, lineno, col, seen)
        if rid is None:
            continue
        text = rec.get("text")
        if not isinstance(text, str) or not text.strip():
            col.add(path, lineno, f'query {rid!r} has an empty or missing "text"; line skipped')
            continue
        queries[rid] = text
        if metadata is not None and isinstance(rec.get("metadata"), dict):
            metadata[rid] = rec["metadata"]
    return queries


def load_qrels(path: str | Path, *, strict: bool = False, issues: list[DataIssue] | None = None) -> Qrels:
    """Load qrels from a TSV with or without a header.

    Accepts BEIR's three columns (``query-id corpus-id score``) and TREC's four (``qid 0 docid score``);
    tabs or runs of spaces separate columns.
    """
    path = Path(path)
    _require_file(path, "qrels")
    col = _Collector(issues, strict)
    qrels: Qrels = {}
    with open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            parts = line.rstrip("\n").split("\t") if "\t" in line else line.split()
            parts = [p.strip() for p in parts]
            if len(parts) == 4:
                qid, _, did, score_s = parts
            elif len(parts) == 3:
                qid, did, score_s = parts
            else:
                col.add(path, lineno, f"expected 3 columns (query-id, corpus-id, score) or 4 (TREC), "
                                      f"got {len(parts)}; line skipped")
                continue
            try:
                score = int(float(score_s))
            except ValueError:
                if lineno == 1:  # a header line such as "query-id corpus-id score"
                    continue
                col.add(path, lineno, f"score {score_s!r} is not a number; line skipped")
                continue
            if not qid or not did:
                col.add(path, lineno, "empty query-id or corpus-id; line skipped")
                continue
            if did in qrels.get(qid, {}):
                col.add(path, lineno, f"duplicate judgement for ({qid!r}, {did!r}); the last one is kept")
            qrels.setdefault(qid, {})[did] = score
    return qrels


def check_qrels(
    qrels: Qrels,
    corpus: Corpus,
    queries: Queries,
    *,
    qrels_file: str = "qrels",
    strict: bool = False,
    issues: list[DataIssue] | None = None,
) -> Qrels:
    """Return ``qrels`` without judgements that point at unknown queries or documents (each one reported)."""
    col = _Collector(issues, strict)
    clean: Qrels = {}
    for qid, docs in qrels.items():
        if qid not in queries:
            col.add(qrels_file, None, f"query-id {qid!r} is not in the queries file; its judgements are skipped")
            continue
        kept = {}
        for did, score in docs.items():
            if did not in corpus:
                col.add(qrels_file, None, f"corpus-id {did!r} (query {qid!r}) is not in the corpus; skipped")
            else:
                kept[did] = score
        if kept:
            clean[qid] = kept
    return clean


def write_corpus(path: str | Path, corpus: Corpus) -> None:
    with atomic_open(path) as fh:
        for did, doc in corpus.items():
            rec = {"_id": did, "title": doc.get("title", ""), "text": doc["text"]}
            rec.update({k: v for k, v in doc.items() if k not in rec})
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")


def write_queries(path: str | Path, queries: Queries, metadata: dict[str, dict] | None = None) -> None:
    with atomic_open(path) as fh:
        for qid, text in queries.items():
            rec: dict = {"_id": qid, "text": text}
            if metadata and qid in metadata:
                rec["metadata"] = metadata[qid]
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")


def write_qrels(path: str | Path, qrels: Qrels) -> None:
    with atomic_open(path) as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for qid, docs in qrels.items():
            for did, score in docs.items():
                fh.write(f"{qid}\t{did}\t{int(score)}\n")


def write_run(path: str | Path, run: Run, *, name: str = "ragtune") -> None:
    """Write a run as JSON, or in TREC format when the file name ends in ``.trec`` or ``.run``."""
    path = Path(path)
    with atomic_open(path) as fh:
        if path.suffix in (".trec", ".run"):
            for qid, docs in run.items():
                ranked = sorted(docs.items(), key=lambda kv: -kv[1])
                for rank, (did, score) in enumerate(ranked, 1):
                    fh.write(f"{qid} Q0 {did} {rank} {score:.6f} {name}\n")
        else:
            json.dump(run, fh)


def load_run(path: str | Path) -> Run:
    path = Path(path)
    _require_file(path, "run")
    if path.suffix in (".trec", ".run"):
        run: Run = {}
        with open_text(path) as fh:
            for lineno, line in enumerate(fh, 1):
                parts = line.split()
                if len(parts) != 6:
                    raise DataFormatError(f"{path}:{lineno}: a TREC run line has 6 columns "
                                          f"(qid Q0 docid rank score tag), got {len(parts)}")
                run.setdefault(parts[0], {})[parts[2]] = float(parts[4])
        return run
    with open_text(path) as fh:
        return {q: {d: float(s) for d, s in docs.items()} for q, docs in json.load(fh).items()}


# --- BEIR directories -----------------------------------------------------------------------------------------


def _resolve(root: Path, name: str | Path | None, candidates: list[str], what: str) -> Path:
    if name is not None:
        p = Path(name)
        for cand in (p, root / p, root / "qrels" / p):
            if cand.is_file():
                return cand
        raise DataFormatError(f"{what} file {str(name)!r} not found as a path or inside {root}")
    for cand in candidates:
        if (root / cand).is_file():
            return root / cand
    raise DataFormatError(f"no {what} file in {root}: looked for {', '.join(candidates)}. "
                          f"Pass the file name explicitly (--{what} FILE).")


@dataclass
class BeirDataset:
    """A corpus with one query set and its judgements, ready for evaluation or training."""

    corpus: Corpus
    queries: Queries
    qrels: Qrels
    query_metadata: dict[str, dict] = field(default_factory=dict)
    issues: list[DataIssue] = field(default_factory=list)
    name: str = ""

    def __post_init__(self) -> None:
        if not self.corpus:
            raise DataFormatError(f"dataset {self.name!r}: the corpus is empty")

    def summary(self) -> str:
        return (f"{self.name or 'dataset'}: {len(self.corpus):,} documents, {len(self.queries):,} queries, "
                f"{sum(len(v) for v in self.qrels.values()):,} judgements")


def load_beir(
    data_dir: str | Path,
    *,
    queries: str | Path | None = None,
    qrels: str | Path | None = None,
    strict: bool = False,
) -> BeirDataset:
    """Load a BEIR directory, keeping only queries that have judgements in the chosen qrels file.

    ``queries`` / ``qrels`` are file names inside ``data_dir`` (or ``data_dir/qrels``) or paths; by default
    ``queries.jsonl`` and ``qrels.tsv`` / ``qrels/test.tsv``.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise DataFormatError(f"--data {root}: not a directory. Give a BEIR directory (corpus.jsonl, "
                              "queries.jsonl, qrels/test.tsv).")
    issues: list[DataIssue] = []
    corpus_path = _resolve(root, None, ["corpus.jsonl", "corpus.jsonl.gz"], "corpus")
    queries_path = _resolve(root, queries, ["queries.jsonl", "queries.jsonl.gz"], "queries")
    qrels_path = _resolve(root, qrels, ["qrels.tsv", "qrels/test.tsv", "qrels/dev.tsv"], "qrels")
    corpus = load_corpus(corpus_path, strict=strict, issues=issues)
    meta: dict[str, dict] = {}
    all_queries = load_queries(queries_path, strict=strict, issues=issues, metadata=meta)
    judged = load_qrels(qrels_path, strict=strict, issues=issues)
    judged = check_qrels(judged, corpus, all_queries, qrels_file=str(qrels_path), strict=strict, issues=issues)
    qs = {qid: all_queries[qid] for qid in judged}
    if not qs:
        raise DataFormatError(f"{qrels_path}: no usable judgements (none of its query-ids and corpus-ids "
                              f"match {queries_path} and {corpus_path})")
    return BeirDataset(corpus, qs, judged, {q: m for q, m in meta.items() if q in qs}, issues, name=root.name)


def write_beir(data_dir: str | Path, ds: BeirDataset, *, split: str = "test") -> None:
    root = Path(data_dir)
    write_corpus(root / "corpus.jsonl", ds.corpus)
    write_queries(root / "queries.jsonl", ds.queries, ds.query_metadata)
    write_qrels(root / "qrels" / f"{split}.tsv", ds.qrels)
