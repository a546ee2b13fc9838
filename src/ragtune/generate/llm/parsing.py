"""Turn an LLM's reply into a list of questions, whatever shape the model chose to answer in.

Handled: numbered lists (``1.``, ``1)``, ``(1)``, ``1、``), bullets, markdown (headings, bold, code fences),
``Q1:`` / ``Question:`` / ``问题：`` prefixes with ``Answer:`` / ``A1:`` / ``答案：`` lines mixed in, several
questions on one line, JSON arrays of strings or objects, JSON objects with a ``questions`` key, and reasoning
models' ``<think>`` blocks. Written by hand: no kept library parses free-form LLM lists.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ragtune.errors import RagtuneError
from ragtune.generate.filters import normalize


class ParseError(RagtuneError, ValueError):
    """The reply held no question; the request is retried and, if it keeps failing, reported as a failure."""


_THINK = re.compile(r"<think>.*?(?:</think>|$)", re.S | re.I)
_FENCE = re.compile(r"```[\w-]*\s*\n?(.*?)```", re.S)
_JSON_KEYS = ("questions", "queries", "question_list", "问题", "问题列表", "items", "data", "results")
_ITEM_KEYS = ("question", "query", "q", "text", "问题")
# Prefixes that mark a line as an item of a list, stripped repeatedly ("1. **Q1:** ..." -> "...").
_PREFIXES = [
    re.compile(r"^\s*(?:#{1,6}|>)\s*"),                                   # markdown heading / quote
    re.compile(r"^\s*\(?\d{1,3}\s*[.)、:：．]\s*(?=\S)"),                  # 1.  1)  (1)  1、
    re.compile(r"^\s*\(?[一二三四五六七八九十]{1,3}\s*[、.)．]\s*"),            # 一、
    re.compile(r"^\s*[-*•·–]\s+"),                                        # bullets
    re.compile(r"^\s*(?:\*\*|__)?(?:q|question|query|问题|问)\s*\d{0,3}\s*(?:\*\*|__)?\s*[:：.)-]\s*(?:\*\*|__)?\s*",
               re.I),                                                     # Q1:  Question 2:  问题：
]
_ANSWER = re.compile(r"^\s*(?:\*\*|__)?(?:a|answer|ans|答案|答|回答|解答)\s*\d{0,3}\s*(?:\*\*|__)?\s*[:：]", re.I)
_INLINE_ANSWER = re.compile(r"\s+(?:\*\*)?(?:A|Answer|答案|答)\s*\d{0,3}(?:\*\*)?\s*[:：].*$")
_SPLIT_INLINE = re.compile(r"(?<=[?？])\s*(?=\(?\d{1,3}\s*[.)、]|(?:Q|Question|问题)\s*\d{0,3}\s*[:：])", re.I)
_QUESTION_END = re.compile(r"[?？]\s*$")
_QUOTES = "\"'“”‘’「」『』`*_ "


def parse_questions(text: str, limit: int | None = None) -> list[str]:
    """The questions in ``text`` (at most ``limit``), in order, duplicates removed; ``[]`` when there are none."""
    text = _THINK.sub("", text or "").strip()
    found = _from_json_anywhere(text)
    if found is None:
        found = _from_lines(text)
    out: list[str] = []
    seen: set[str] = set()
    for q in found:
        q = _clean(q)
        key = normalize(q)
        if q and key and key not in seen:
            seen.add(key)
            out.append(q)
    return out[:limit] if limit else out


def parse_or_raise(text: str, limit: int | None = None) -> list[str]:
    questions = parse_questions(text, limit)
    if not questions:
        snippet = " ".join((text or "").split())[:120]
        raise ParseError(f"no question found in the reply {snippet!r}")
    return questions


# --- JSON ---------------------------------------------------------------------------------------------------


def _from_json_anywhere(text: str) -> list[str] | None:
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    for open_ch, close_ch in (("[", "]"), ("{", "}")):
        start, end = text.find(open_ch), text.rfind(close_ch)
        if 0 <= start < end:
            candidates.append(text[start:end + 1])
    for cand in candidates:
        cand = cand.strip()
        if not cand or cand[0] not in "[{":
            continue
        try:
            obj = json.loads(cand)
        except json.JSONDecodeError:
            continue
        found = _from_json(obj)
        if found:
            return found
    return None


def _from_json(obj: Any) -> list[str]:
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, list):
        return [q for item in obj for q in _from_json_item(item)]
    if isinstance(obj, dict):
        for key in _JSON_KEYS:
            for k, v in obj.items():
                if k.lower() == key:
                    return _from_json(v)
        item = _from_json_item(obj)
        if item:
            return item
        lists = [v for v in obj.values() if isinstance(v, list)]
        if len(lists) == 1:
            return _from_json(lists[0])
        strings = [v for v in obj.values() if isinstance(v, str)]
        if strings and all(_QUESTION_END.search(s) for s in strings):  # {"q1": "...?", "q2": "...?"}
            return strings
    return []


def _from_json_item(item: Any) -> list[str]:
    if isinstance(item, str):
        return [item]
    if isinstance(item, dict):
        for key in _ITEM_KEYS:
            for k, v in item.items():
                if k.lower() == key and isinstance(v, str):
                    return [v]
    return []


# --- free text ----------------------------------------------------------------------------------------------


def _from_lines(text: str) -> list[str]:
    text = _FENCE.sub(lambda m: m.group(1), text)
    out: list[str] = []
    for raw in text.splitlines():
        for piece in _SPLIT_INLINE.split(raw):
            out.extend(_from_line(piece))
    return out


def _from_line(line: str) -> list[str]:
    if not line.strip() or _ANSWER.match(line):
        return []
    body, marked = _strip_prefixes(line)
    body = _INLINE_ANSWER.sub("", body).strip()
    body = body.strip(_QUOTES)
    if not body or body.endswith((":", "：")):
        return []
    if _QUESTION_END.search(body):
        parts = [p for p in re.split(r"(?<=[?？])\s*", body) if p.strip()]
        if not marked:  # an unmarked paragraph: keep only its questions
            return [p for p in parts if _QUESTION_END.search(p)]
        return [body] if len(parts) == 1 else parts
    return [body] if marked else []


def _strip_prefixes(line: str) -> tuple[str, bool]:
    marked = False
    changed = True
    line = line.strip()
    while changed and line:
        changed = False
        for pat in _PREFIXES:
            new = pat.sub("", line, count=1)
            if new != line:
                marked = marked or pat is not _PREFIXES[0]
                line, changed = new.strip(), True
        if line.startswith(("**", "__")) and line.count(line[:2]) >= 2:  # **bold question**
            line, changed = line.replace(line[:2], ""), True
    return line, marked


def _clean(q: str) -> str:
    q = " ".join(q.replace("**", "").split())
    return q.strip(_QUOTES).strip()
