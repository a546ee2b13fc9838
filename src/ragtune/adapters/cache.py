"""A persistent embedding cache: every text is embedded once per encoder, and kept as it arrives.

SQLite (stdlib) rather than npy shards: one file, transactions make each batch durable the moment it is
committed (so an endpoint that fails mid-way loses nothing already embedded), and concurrent readers are safe.
Vectors are stored as raw float32 bytes, keyed by ``(encoder key, sha1(text))``; the encoder key already says
whether a text was embedded as a query or a document. Each encoder key records its dimension, and a vector of
another dimension is refused.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ragtune.errors import ConfigError, DataFormatError

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS encoders (key TEXT PRIMARY KEY, dim INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS vectors (
    key TEXT NOT NULL, hash TEXT NOT NULL, vec BLOB NOT NULL, PRIMARY KEY (key, hash)
) WITHOUT ROWID;
"""
_CHUNK = 500  # sqlite's default limit on bound parameters is 999 (older builds)


def text_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()


def default_cache_path() -> Path:
    """``$RAGTUNE_CACHE_DIR/embeddings.sqlite``, else ``$XDG_CACHE_HOME/ragtune/...``, else ``~/.cache/ragtune/...``."""
    import os

    root = os.environ.get("RAGTUNE_CACHE_DIR")
    if root:
        return Path(root) / "embeddings.sqlite"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "ragtune" / "embeddings.sqlite"


class EmbeddingCache:
    """``cache.get(key, hashes)`` / ``cache.put(key, hashes, vectors)``; ``path=None`` keeps it in memory."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = None if path is None else Path(path)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        target = ":memory:" if self.path is None else str(self.path)
        try:
            self._db = sqlite3.connect(target, check_same_thread=False, timeout=30.0)
            if self.path is not None:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise DataFormatError(f"embedding cache {target}: cannot open it as SQLite ({exc}). Delete the file "
                                  "or pass another --cache path.") from exc
        self._lock = threading.Lock()

    @classmethod
    def open(cls, cache: EmbeddingCache | str | Path | None | bool) -> EmbeddingCache:
        """An instance passes through; a path opens it; True/None uses :func:`default_cache_path`;
        False gives an in-memory cache (nothing persisted)."""
        if isinstance(cache, EmbeddingCache):
            return cache
        if cache is False:
            return cls(None)
        if cache is None or cache is True:
            return cls(default_cache_path())
        return cls(cache)

    def dim(self, key: str) -> int | None:
        with self._lock:
            row = self._db.execute("SELECT dim FROM encoders WHERE key = ?", (key,)).fetchone()
        return None if row is None else int(row[0])

    def count(self, key: str | None = None) -> int:
        with self._lock:
            if key is None:
                return int(self._db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0])
            return int(self._db.execute("SELECT COUNT(*) FROM vectors WHERE key = ?", (key,)).fetchone()[0])

    def get(self, key: str, hashes: Iterable[str]) -> dict[str, np.ndarray]:
        """The cached vectors among ``hashes`` (missing ones are simply absent from the result)."""
        wanted = list(dict.fromkeys(hashes))
        dim = self.dim(key)
        if dim is None or not wanted:
            return {}
        out: dict[str, np.ndarray] = {}
        with self._lock:
            for lo in range(0, len(wanted), _CHUNK):
                part = wanted[lo:lo + _CHUNK]
                marks = ",".join("?" * len(part))
                rows = self._db.execute(f"SELECT hash, vec FROM vectors WHERE key = ? AND hash IN ({marks})",
                                        (key, *part)).fetchall()
                for h, blob in rows:
                    out[h] = np.frombuffer(blob, dtype=np.float32, count=dim)
        return out

    def put(self, key: str, hashes: Sequence[str], vectors: np.ndarray) -> None:
        """Store one batch in a single transaction (all of it or none of it)."""
        vecs = np.ascontiguousarray(vectors, dtype=np.float32)
        if vecs.ndim != 2 or vecs.shape[0] != len(hashes):
            raise ConfigError(f"cache.put: got {len(hashes)} hashes and vectors of shape {vecs.shape}")
        if vecs.shape[0] == 0:
            return
        dim = int(vecs.shape[1])
        with self._lock, self._db:
            row = self._db.execute("SELECT dim FROM encoders WHERE key = ?", (key,)).fetchone()
            if row is None:
                self._db.execute("INSERT INTO encoders (key, dim) VALUES (?, ?)", (key, dim))
            elif int(row[0]) != dim:
                raise ConfigError(f"embedding dimension mismatch for encoder {key!r}: the cache holds "
                                  f"{row[0]}-d vectors, the encoder now returns {dim}-d. The model behind the "
                                  "name changed: use another encoder name/model, or delete the cache file "
                                  f"{self.path or '(in memory)'}.")
            self._db.executemany("INSERT OR REPLACE INTO vectors (key, hash, vec) VALUES (?, ?, ?)",
                                 [(key, h, v.tobytes()) for h, v in zip(hashes, vecs, strict=True)])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.path) if self.path else ':memory:'})"
