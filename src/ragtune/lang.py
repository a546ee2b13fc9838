"""Language detection good enough to pick a tokenizer and a prompt: Chinese vs everything else."""

from __future__ import annotations

import re
from collections.abc import Iterable

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LETTER = re.compile(r"[^\W\d_]", re.UNICODE)


def cjk_ratio(text: str) -> float:
    """Share of letters in ``text`` that are CJK ideographs (0.0 for text without letters)."""
    letters = _LETTER.findall(text)
    if not letters:
        return 0.0
    return sum(1 for ch in letters if _CJK.match(ch)) / len(letters)


def detect_language(texts: str | Iterable[str], sample: int = 200) -> str:
    """``"zh"`` when CJK ideographs make up at least 30 % of the letters of (a sample of) ``texts``, else ``"en"``."""
    if isinstance(texts, str):
        texts = [texts]
    joined = "".join(t for _, t in zip(range(sample), texts, strict=False))
    return "zh" if cjk_ratio(joined) >= 0.3 else "en"


def is_chinese(text: str) -> bool:
    return detect_language(text) == "zh"
