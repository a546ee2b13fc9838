"""An example document folder that every Python installation already holds, so ragtune ships no sample data.

``pydoc_data.topics`` is the text behind ``help("assert")``: 79 topics of the Python language reference
(~465 KB of English prose and code in CPython 3.11; the exact text follows the running Python's version).
"""

from __future__ import annotations

import logging
from pathlib import Path

from ragtune._io import atomic_write_text

logger = logging.getLogger(__name__)


def pydoc_topics() -> dict[str, str]:
    """``{topic: text}`` from the running Python's ``pydoc_data.topics``, sorted by topic."""
    from pydoc_data.topics import topics

    return dict(sorted(topics.items()))


def write_pydoc_topics(out_dir: str | Path) -> int:
    """Write each pydoc topic as ``<topic>.txt`` (its underlined title line, then the text); return the count."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    topics = pydoc_topics()
    for name, text in topics.items():
        body = text.strip("\n")
        lines = body.split("\n", 2)
        if len(lines) < 2 or not lines[1].strip() or set(lines[1].strip()) - set("*=-~^"):
            body = f"{name}\n{'*' * len(name)}\n\n{body}"  # every topic has a title today; keep it so if not
        atomic_write_text(out / f"{_safe_name(name)}.txt", body + "\n")
    logger.info("wrote %d pydoc topics to %s", len(topics), out)
    return len(topics)


def _safe_name(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in name) or "topic"
