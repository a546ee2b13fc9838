"""The durable result store that makes generation resumable exactly.

Every request is keyed by :func:`request_key` (a hash of the rendered prompt, which holds the chunk text, plus the
model and the sampling parameters). Each reply is committed to a SQLite database in WAL mode with
``synchronous=FULL`` as it arrives (:class:`GroupCommitWriter` commits replies that arrive together in one
transaction, off the event loop), and a request counts as finished only once committed, so after ``kill -9`` (or
a power cut) a rerun finds every finished request and sends only the others. SQLite, not a JSONL file, because it is in the standard library, survives a torn
last write, and looks keys up without loading everything.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragtune._io import text_sha1

logger = logging.getLogger(__name__)

CACHE_FILE = "llm-cache.sqlite"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    key TEXT PRIMARY KEY,
    status TEXT NOT NULL,             -- ok | failed
    questions TEXT NOT NULL,          -- JSON list of strings
    raw TEXT NOT NULL,                -- the model's last reply, as received
    error TEXT,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    model TEXT,
    prompt_hash TEXT,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (id INTEGER PRIMARY KEY AUTOINCREMENT, info TEXT NOT NULL);
"""


def request_key(messages: list[dict[str, str]], model: str, params: dict[str, Any]) -> str:
    """Hash of (prompt messages, model, sampling params): equal keys are the same request."""
    return text_sha1(json.dumps({"messages": messages, "model": model, "params": params},
                                sort_keys=True, ensure_ascii=False, default=str))


@dataclass
class CachedResult:
    key: str
    status: str
    questions: list[str] = field(default_factory=list)
    raw: str = ""
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    attempts: int = 1
    model: str | None = None
    prompt_hash: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class ResultCache:
    """A SQLite table of results; one commit (and fsync) per :meth:`put`. Use as a context manager."""

    def __init__(self, path: str | Path):
        path = Path(path)
        if path.suffix != ".sqlite":
            path = path / CACHE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def __enter__(self) -> ResultCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0]

    def get_many(self, keys: Iterable[str]) -> dict[str, CachedResult]:
        keys = list(dict.fromkeys(keys))
        out: dict[str, CachedResult] = {}
        cols = ("key, status, questions, raw, error, prompt_tokens, completion_tokens, attempts, model, "
                "prompt_hash")
        for i in range(0, len(keys), 500):
            part = keys[i:i + 500]
            rows = self._db.execute(f"SELECT {cols} FROM results WHERE key IN ({','.join('?' * len(part))})",
                                    part).fetchall()
            for row in rows:
                out[row[0]] = CachedResult(row[0], row[1], json.loads(row[2]), row[3], row[4], row[5], row[6],
                                           row[7], row[8], row[9])
        return out

    def put(self, r: CachedResult) -> None:
        """Store ``r`` durably; a later ``ok`` replaces an earlier ``failed`` for the same key."""
        self.put_many([r])

    def put_many(self, results: list[CachedResult]) -> None:
        """Store ``results`` in one transaction (one fsync), all or none."""
        rows = [(r.key, r.status, json.dumps(r.questions, ensure_ascii=False), r.raw, r.error, r.prompt_tokens,
                 r.completion_tokens, r.attempts, r.model, r.prompt_hash, time.time()) for r in results]
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany("INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def record_run(self, info: dict[str, Any]) -> None:
        self._db.execute("INSERT INTO runs (info) VALUES (?)", (json.dumps(info, default=str),))

    def runs(self) -> list[dict[str, Any]]:
        return [json.loads(r[0]) for r in self._db.execute("SELECT info FROM runs ORDER BY id")]


class GroupCommitWriter:
    """Commits results for an event loop on one background thread, without blocking the loop.

    ``await writer.put(r)`` returns once ``r`` is committed; results that arrive while a commit is running go into
    the next transaction together, so a burst of replies costs one fsync instead of one each.
    """

    def __init__(self, cache: ResultCache):
        self.cache = cache
        self._queue: list[tuple[CachedResult, asyncio.Future]] = []
        self._task: asyncio.Task | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ragtune-cache")

    async def put(self, r: CachedResult) -> None:
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._queue.append((r, fut))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())
        await fut

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                await loop.run_in_executor(self._pool, self.cache.put_many, [r for r, _ in batch])
            except Exception as exc:  # noqa: BLE001 - handed to every waiting caller
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for _, fut in batch:
                if not fut.done():
                    fut.set_result(None)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
