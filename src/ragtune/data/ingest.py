"""Turn a folder of documents into a BEIR corpus of chunks: ``result = ingest(input_dir, config)``.

Every file is either parsed into chunks or listed in ``result.skipped`` with a reason; one bad file never stops
the run. Chunk ids depend only on the file's relative path (and record id for jsonl) and the chunk's index, so a
rerun over the same folder gives the same ids, and adding a file does not renumber the others.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ragtune._io import atomic_write_json, text_sha1
from ragtune.config import IngestConfig
from ragtune.data.beir import Corpus, write_corpus
from ragtune.data.chunking import Chunker, chunk_language
from ragtune.data.parsers import ParsedFile, SkipFile, format_name, get_parser
from ragtune.errors import ConfigError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SkippedFile:
    path: str  # relative to the input folder, posix
    reason: str


@dataclass
class DocumentInfo:
    path: str
    format: str
    encoding: str | None
    chunks: int  # chunks kept after duplicate removal
    records: int = 1  # documents in the file (lines of a jsonl file)
    warnings: list[str] = field(default_factory=list)


@dataclass
class IngestResult:
    corpus: Corpus
    documents: list[DocumentInfo] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    duplicates_removed: int = 0

    def report(self) -> dict[str, Any]:
        """JSON-able summary: counts, then every document and every skipped file."""
        return {
            "files_parsed": len(self.documents),
            "files_skipped": len(self.skipped),
            "chunks": len(self.corpus),
            "duplicates_removed": self.duplicates_removed,
            "languages": _count(doc["lang"] for doc in self.corpus.values()),
            "documents": [asdict(d) for d in self.documents],
            "skipped": [asdict(s) for s in self.skipped],
        }


def _count(values) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return dict(sorted(out.items()))


def _slug(text: str, limit: int = 40) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:limit].rstrip("-") or "doc"


def chunk_id_prefix(relpath: str, record_id: str | None = None) -> str:
    """``<slug of the path>[-<slug of the record id>]-<8 hex of sha1>``; the chunk index is appended to it."""
    stem = relpath.rsplit(".", 1)[0] if "." in relpath.rsplit("/", 1)[-1] else relpath
    key = relpath if record_id is None else f"{relpath}#{record_id}"
    parts = [_slug(stem)] + ([_slug(record_id, 24)] if record_id is not None else []) + [text_sha1(key)[:8]]
    return "-".join(parts)


def iter_files(root: Path, exclude: Sequence[str | Path] = ()) -> list[Path]:
    """Every non-hidden file below ``root`` (hidden folders and ``exclude`` are not entered), sorted."""
    skip = {Path(p).resolve() for p in exclude}
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and (Path(dirpath) / d).resolve() not in skip]
        found.extend(Path(dirpath) / f for f in filenames if not f.startswith("."))
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _fmt_mb(mb: float) -> str:
    return f"{mb:.1f}" if mb >= 10 else f"{mb:.3g}"


def _check_file(path: Path, config: IngestConfig, extensions: set[str]) -> str | None:
    """The reason to skip ``path`` before parsing it, or ``None``."""
    ext = path.suffix.lower()
    if ext not in extensions:
        return f"unsupported extension {ext}" if ext else "unsupported extension (none)"
    size = path.stat().st_size
    if size == 0:
        return "empty"
    mb = size / 1e6
    if mb > config.max_file_mb:
        return (f"too large ({_fmt_mb(mb)} MB > {config.max_file_mb:g} MB limit; raise ingest.max_file_mb)")
    return None


def _progress(files: list[Path]):
    from tqdm.auto import tqdm

    quiet = not logger.isEnabledFor(logging.INFO) or not sys.stderr.isatty()
    return tqdm(files, desc="ingest", unit="file", disable=quiet, leave=False)


def ingest(input_dir: str | Path, config: IngestConfig | None = None, *,
           exclude: Sequence[str | Path] = ()) -> IngestResult:
    """Parse, chunk and deduplicate every supported file below ``input_dir``.

    Folders in ``exclude`` are not read (the CLI passes its ``--output`` so a rerun does not ingest its own output).
    """
    config = config or IngestConfig()
    root = Path(input_dir)
    if not root.exists():
        raise ConfigError(f"input directory {str(root)!r} does not exist. Pass the folder that holds your "
                          "documents (txt, md, html, pdf, docx, jsonl).")
    if not root.is_dir():
        raise ConfigError(f"input {str(root)!r} is a file, not a directory. Put the document in a folder and "
                          "pass the folder.")
    extensions = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in config.extensions}
    chunker = Chunker.from_config(config)
    result = IngestResult(corpus={})
    seen_texts: set[str] = set()
    for path in _progress(iter_files(root, exclude)):
        rel = path.relative_to(root).as_posix()
        try:
            reason = _check_file(path, config, extensions)
            if reason is None:
                parsed = get_parser(path.suffix)(path)
                _add_file(result, rel, path.suffix, parsed, chunker, seen_texts)
                continue
        except SkipFile as exc:
            reason = exc.reason
        except OSError as exc:
            reason = f"unreadable ({exc.strerror or exc})"
        except Exception as exc:  # a parser library failing on one file must not stop the run
            logger.debug("parse error in %s", rel, exc_info=True)
            reason = f"parse error ({type(exc).__name__}: {exc})"
        if not reason.startswith("unsupported extension"):
            logger.warning("skipped %s: %s", rel, reason)
        result.skipped.append(SkippedFile(rel, reason))
    logger.info("ingested %d files into %d chunks (%d duplicate chunks removed, %d files skipped)",
                len(result.documents), len(result.corpus), result.duplicates_removed, len(result.skipped))
    return result


def _add_file(result: IngestResult, rel: str, suffix: str, parsed: ParsedFile, chunker: Chunker,
              seen_texts: set[str]) -> None:
    """Chunk each document of ``parsed`` into ``result.corpus``; raise :class:`SkipFile` when nothing is left."""
    jsonl = suffix.lower() == ".jsonl"
    produced = kept = 0
    for doc in parsed.docs:
        chunks = chunker.chunk(doc.text)
        produced += len(chunks)
        prefix = chunk_id_prefix(rel, doc.id if jsonl else None)
        for index, chunk in enumerate(chunks):
            norm = " ".join(chunk.text.split())
            if norm in seen_texts:
                result.duplicates_removed += 1
                continue
            seen_texts.add(norm)
            kept += 1
            result.corpus[f"{prefix}-{index}"] = {
                "title": doc.title, "text": chunk.text, "doc": f"{rel}#{doc.id}" if jsonl else rel,
                "chunk": index, "lang": chunk_language(chunk.text)}
    if produced == 0:
        raise SkipFile("empty" if all(not d.text.strip() for d in parsed.docs) else "no text after parsing")
    if kept == 0:
        parsed.warnings.append(f"all {produced} chunks duplicate chunks of earlier files; none kept")
    for warning in parsed.warnings:
        logger.warning("%s: %s", rel, warning)
    result.documents.append(DocumentInfo(rel, format_name(suffix), parsed.encoding, kept, len(parsed.docs),
                                         parsed.warnings))


def write_ingest(result: IngestResult, out_dir: str | Path) -> dict[str, Any]:
    """Write ``out_dir/corpus.jsonl`` and ``out_dir/ingest-report.json`` atomically; return the report."""
    out = Path(out_dir)
    write_corpus(out / "corpus.jsonl", result.corpus)
    report = result.report()
    atomic_write_json(out / "ingest-report.json", report)
    return report
