"""Cross-encoder teachers: resolve one from a spec, name it stably, and score (query, passage) pairs with an
on-disk cache (:class:`TeacherScorer`). Hard-negative mining (:mod:`ragtune.mining`) and the embedding trainer's
distillation losses use it.
"""

from __future__ import annotations

import logging
import sqlite3
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ragtune._io import text_key
from ragtune.errors import ConfigError

logger = logging.getLogger(__name__)


def _show_progress(show: bool | None) -> bool:
    return show if show is not None else logging.getLogger("ragtune").getEffectiveLevel() <= logging.INFO


def teacher_name(teacher: Any) -> str | None:
    """A stable name for a teacher (its spec or model path), used as part of the score cache key; ``None`` when
    the object has no recognisable name (its scores are then cached in memory only)."""
    if isinstance(teacher, str | Path):
        return str(teacher)
    for attr in ("cache_key", "spec", "name_or_path", "model_name"):
        value = getattr(teacher, attr, None)
        if isinstance(value, str | Path) and str(value):
            return f"{type(teacher).__name__}:{value}"
    inner = getattr(getattr(teacher, "model", None), "config", None)
    path = getattr(inner, "_name_or_path", None) or getattr(inner, "name_or_path", None)
    return f"{type(teacher).__name__}:{path}" if path else None


def resolve_teacher(teacher: Any, *, max_length: int = 512, device: str | None = None) -> Any:
    """An object with ``predict(pairs, batch_size)``: ``teacher`` itself, or the scorer that
    :func:`ragtune.retrieval.scorers.load_scorer` builds from a spec string (CrossEncoder dir/name, ``msmarco-onnx``,
    a ``.onnx`` path)."""
    if isinstance(teacher, str | Path):
        from ragtune.retrieval.rerank import load_scorer

        return load_scorer(str(teacher), max_length=max_length, device=device)
    if not callable(getattr(teacher, "predict", None)):
        raise ConfigError(f"teacher={teacher!r}: expected a spec string (a CrossEncoder directory or name, "
                          "'msmarco-onnx', an .onnx path) or an object with predict(pairs, batch_size)")
    return teacher


def _autocast_like(obj: Any):
    """bf16 autocast when ``obj`` (a model) lives on a GPU that supports it, else a no-op context."""
    import contextlib

    device = str(getattr(obj, "device", "cpu"))
    if device.startswith("cuda"):
        import torch

        if torch.cuda.is_bf16_supported():
            return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class TeacherScorer:
    """Scores (query, passage) pairs with a teacher, in length-sorted batches, with an on-disk cache.

    The cache is an SQLite file (``cache_path``) keyed by ``sha1(teacher name, max_length, query, passage)``; each
    chunk of scores is committed as soon as it is computed, so an interrupted run loses at most one chunk and a
    resumed one rescoring nothing it already has. Without a teacher name the cache lives in memory only.
    """

    def __init__(self, teacher: Any, *, name: str | None = None, cache_path: str | Path | None = None,
                 batch_size: int = 128, max_length: int = 512, show_progress: bool | None = None) -> None:
        self.teacher = teacher
        self.name = name if name is not None else teacher_name(teacher)
        self.batch_size, self.max_length, self.show_progress = batch_size, max_length, show_progress
        self.memory: dict[str, float] = {}
        self.n_scored = 0
        self._db: sqlite3.Connection | None = None
        if cache_path is not None and self.name is not None:
            Path(cache_path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(cache_path), timeout=30.0)
            self._db.execute("CREATE TABLE IF NOT EXISTS scores (key TEXT PRIMARY KEY, score REAL NOT NULL)")
            self._db.commit()
        elif cache_path is not None:
            logger.info("teacher %s has no stable name: its scores are not cached on disk", type(teacher).__name__)

    def _key(self, query: str, passage: str) -> str:
        return text_key(str(self.name), str(self.max_length), query, passage)

    def _lookup(self, keys: list[str]) -> None:
        if self._db is None:
            return
        missing = [k for k in keys if k not in self.memory]
        for lo in range(0, len(missing), 500):
            chunk = missing[lo:lo + 500]
            rows = self._db.execute(f"SELECT key, score FROM scores WHERE key IN ({','.join('?' * len(chunk))})",
                                    chunk).fetchall()
            self.memory.update(rows)

    def score(self, pairs: Sequence[tuple[str, str]], desc: str = "teacher scoring") -> list[float]:
        """Teacher scores of ``pairs`` (cached ones are not recomputed)."""
        import numpy as np
        from tqdm.auto import tqdm

        keys = [self._key(q, p) for q, p in pairs]
        self._lookup(keys)
        todo: dict[str, tuple[str, str]] = {}
        for key, pair in zip(keys, pairs, strict=True):
            if key not in self.memory and key not in todo:
                todo[key] = (pair[0], pair[1])
        if todo and self.teacher is None:
            raise RuntimeError(f"teacher scorer {self.name!r} is closed and {len(todo)} pairs are not in its cache: "
                               "score them before close(), or make a new TeacherScorer")
        if todo:
            # longest first: batches of similar length waste little padding, and an OOM shows up at once
            order = sorted(todo, key=lambda k: -(len(todo[k][0]) + len(todo[k][1])))
            chunk_size = self.batch_size * 16
            t0 = time.perf_counter()
            with tqdm(total=len(order), desc=desc, unit="pair", file=sys.stderr, dynamic_ncols=True,
                      disable=not _show_progress(self.show_progress)) as bar:
                for lo in range(0, len(order), chunk_size):
                    chunk = order[lo:lo + chunk_size]
                    with _autocast_like(self.teacher):
                        raw = self.teacher.predict([todo[k] for k in chunk], batch_size=self.batch_size)
                    if hasattr(raw, "detach"):  # a torch tensor
                        raw = raw.detach().float().cpu().numpy()
                    values = np.asarray(raw, dtype=np.float64).reshape(len(chunk), -1)
                    scores = [float(v) for v in values[:, -1]]  # one logit, or the "relevant" class of two
                    self.memory.update(zip(chunk, scores, strict=True))
                    if self._db is not None:
                        self._db.executemany("INSERT OR REPLACE INTO scores VALUES (?, ?)", zip(chunk, scores,
                                                                                                strict=True))
                        self._db.commit()
                    bar.update(len(chunk))
            self.n_scored += len(order)
            logger.info("teacher scored %d pairs in %.1f s (%d from cache)", len(order), time.perf_counter() - t0,
                        len(set(keys)) - len(order))
        return [self.memory[k] for k in keys]

    def close(self) -> None:
        """Close the cache and let go of the teacher. An ONNX Runtime session keeps the memory its largest batch
        needed (about 6 GB for the ms-marco reranker at 128 x 512 tokens) until it is dropped, so a trainer that
        kept the scorer would carry that through training. Scores already in ``memory`` stay readable."""
        if self._db is not None:
            self._db.close()
            self._db = None
        self.teacher = None
