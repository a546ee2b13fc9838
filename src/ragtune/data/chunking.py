"""Sentence-aware, token-aware chunking with overlap, for English and Chinese.

Text is cut into sentences (hand-written rules: no kept library splits both English and Chinese without a model
download), sentences are counted with the retriever's tokenizer in one batch, and chunks are packed from whole
sentences up to ``chunk_tokens``. The last sentences of a chunk, up to ``overlap_tokens``, open the next one.
A sentence longer than a chunk is cut at token boundaries (never inside a word).
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ragtune.config import IngestConfig
from ragtune.lang import detect_language

logger = logging.getLogger(__name__)

# --- sentences -----------------------------------------------------------------------------------------------------

_CJK_CHAR = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CLOSE = "\"'”’」』）》】〕)\\]"
# Chinese terminators end a sentence wherever they stand; ASCII !?; do so right after a hanzi.
_ZH_END = re.compile(rf"(?:[。！？；｡．]+|(?<=[{_CJK_CHAR}])[!?;]+)[{_CLOSE}]*")
_EN_END = re.compile(rf"[.!?]+[{_CLOSE}]*(?=\s)")
_ABBREVIATIONS = frozenset({
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "cf", "al", "fig", "figs", "no",
    "nos", "vol", "vols", "pp", "p", "ch", "sec", "eq", "eqs", "approx", "inc", "ltd", "co", "corp", "jan", "feb",
    "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "u.s", "u.k", "a.m", "p.m", "ph.d"})
_PARAGRAPH = re.compile(r"\n[ \t]*\n\s*")
_LIST_ITEM = re.compile(r"\n(?=[ \t]*(?:[-*+•]|\d{1,3}[.)])[ \t]+\S)")
_CJK = re.compile(f"[{_CJK_CHAR}]")


def _is_abbreviation(block: str, dot_end: int) -> bool:
    """True when the period ending at ``dot_end`` belongs to an abbreviation or an initial ("J. Smith")."""
    start = max(block.rfind(" ", 0, dot_end), block.rfind("\n", 0, dot_end), block.rfind("(", 0, dot_end)) + 1
    word = block[start:dot_end].rstrip(".").lower()
    if word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha()):
        return True
    nxt = block[dot_end:].lstrip()[:1]
    return nxt.islower()  # "approx. three", "e.g. this": a lowercase word rarely opens a sentence


def _split_block(block: str) -> list[str]:
    cuts = {m.end() for m in _ZH_END.finditer(block)}
    for m in _EN_END.finditer(block):
        if m.group().startswith(".") and len(m.group().rstrip(_CLOSE)) == 1 and _is_abbreviation(block, m.end()):
            continue
        cuts.add(m.end())
    out, prev = [], 0
    for cut in sorted(cuts):
        out.append(block[prev:cut])
        prev = cut
    out.append(block[prev:])
    return [s for s in out if s.strip()]


def _normalize(sentence: str) -> str:
    return " ".join(sentence.split())


def chunk_language(text: str) -> str:
    """``"zh"`` or ``"en"`` as :func:`ragtune.lang.detect_language` says, skipping it for text without hanzi."""
    return detect_language(text) if _CJK.search(text) else "en"


def split_sentences_with_breaks(text: str) -> list[tuple[str, bool]]:
    """``(sentence, starts_paragraph)`` pairs, whitespace inside each sentence collapsed.

    Boundaries: blank lines; list items; ``. ! ?`` before whitespace (abbreviations and initials excepted);
    ``。！？；`` and their variants anywhere; and, in Chinese text, every line break (Chinese is not hard-wrapped).
    """
    chinese = chunk_language(text[:20000]) == "zh"
    out: list[tuple[str, bool]] = []
    for para in _PARAGRAPH.split(text):
        lines = para.split("\n") if chinese else _LIST_ITEM.split(para)
        first = True
        for line in lines:
            for sentence in _split_block(line):
                norm = _normalize(sentence)
                if norm:
                    out.append((norm, first))
                    first = False
    return out


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text`` in order (see :func:`split_sentences_with_breaks`)."""
    return [s for s, _ in split_sentences_with_breaks(text)]


# --- token counting ------------------------------------------------------------------------------------------------


class TokenCounter(Protocol):
    """Counts tokens of many texts at once and cuts a text into pieces of at most ``max_tokens`` tokens."""

    def count(self, texts: Sequence[str]) -> list[int]: ...

    def pieces(self, text: str, max_tokens: int) -> list[tuple[str, int]]: ...


class HFTokenCounter:
    """Counts with a fast (Rust) ``tokenizers.Tokenizer``; special tokens are not counted."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()

    def count(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        encode = getattr(self.tokenizer, "encode_batch_fast", self.tokenizer.encode_batch)  # fast: no offsets
        return [len(e.ids) for e in encode(list(texts), add_special_tokens=False)]

    def pieces(self, text: str, max_tokens: int) -> list[tuple[str, int]]:
        enc = self.tokenizer.encode(text, add_special_tokens=False)
        offsets, words = enc.offsets, enc.word_ids
        out, start, n = [], 0, len(offsets)
        while start < n:
            end = min(start + max_tokens, n)
            # back off to the start of a word, unless one word is longer than a whole piece
            back = end
            while end < n and back > start + 1 and words[back] is not None and words[back] == words[back - 1]:
                back -= 1
            if end < n and back > start + 1:
                end = back
            lo = offsets[start][0]
            hi = offsets[end][0] if end < n else len(text)
            piece = text[lo:hi].strip()
            if piece:
                out.append((piece, end - start))
            start = end
        return out


_UNIT = re.compile(rf"[{_CJK_CHAR}]|[^\s{_CJK_CHAR}]+")


class SimpleTokenCounter:
    """Words and single hanzi as tokens: no model needed. Pass ``count_fn`` to count with another tokenizer."""

    def __init__(self, count_fn=None):
        self.count_fn = count_fn

    def count(self, texts: Sequence[str]) -> list[int]:
        if self.count_fn is not None:
            return list(self.count_fn(list(texts))) if texts else []
        return [len(_UNIT.findall(t)) for t in texts]

    def pieces(self, text: str, max_tokens: int) -> list[tuple[str, int]]:
        units = [m.span() for m in _UNIT.finditer(text)]
        sizes = self.count([text[a:b] for a, b in units])
        out, start, total = [], 0, 0
        for i, size in enumerate(sizes):
            if total and total + size > max_tokens:
                out.append((text[units[start][0]:units[i][0]].strip(), total))
                start, total = i, 0
            total += size
        if start < len(units):
            out.append((text[units[start][0]:].strip(), total))
        return [(p, n) for p, n in out if p]


@functools.lru_cache(maxsize=4)
def get_token_counter(tokenizer: str | None = None) -> TokenCounter:
    """The packaged MiniLM's tokenizer (``None``/``"minilm"``) or the tokenizer of a transformers model.

    A local model folder with a ``tokenizer.json`` is read by the ``tokenizers`` library directly (fast, no
    transformers import); anything else goes through ``AutoTokenizer``.
    """
    from ragtune.models import resolve_model

    resolved = resolve_model(tokenizer)
    tokenizer_file = Path(resolved) / "tokenizer.json"
    if tokenizer_file.is_file():
        from tokenizers import Tokenizer

        return HFTokenCounter(Tokenizer.from_file(str(tokenizer_file)))
    from transformers import AutoTokenizer

    from ragtune.errors import ConfigError

    try:
        tok = AutoTokenizer.from_pretrained(resolved)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"ingest.tokenizer {tokenizer!r}: cannot load its tokenizer ({exc}). Give a local "
                          "model directory, a hub name, or leave it unset for the packaged MiniLM.") from exc
    if getattr(tok, "is_fast", False):
        return HFTokenCounter(tok.backend_tokenizer)
    return SimpleTokenCounter(lambda texts: [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]])


# --- packing -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chunk:
    text: str
    tokens: int  # sum of the sentence counts; the text's own count differs by at most a few tokens


def _join(sentences: Sequence[tuple[str, int, bool]]) -> str:
    out: list[str] = []
    for i, (text, _, para) in enumerate(sentences):
        if i:
            prev = out[-1][-1]
            sep = "\n" if para else ("" if _CJK.match(prev) or prev in "。！？；，、：”）" else " ")
            if sep == "" and not _CJK.match(text[0]) and text[0].isalnum() and prev.isalnum():
                sep = " "
            out.append(sep)
        out.append(text)
    return "".join(out)


class Chunker:
    """Packs sentences into chunks; build with :meth:`from_config` to count with the configured tokenizer."""

    def __init__(self, chunk_tokens: int = 200, overlap_tokens: int = 32, min_chunk_tokens: int = 8,
                 counter: TokenCounter | None = None):
        if overlap_tokens >= chunk_tokens:
            raise ValueError(f"overlap_tokens ({overlap_tokens}) must be smaller than chunk_tokens ({chunk_tokens})")
        self.chunk_tokens = chunk_tokens
        self.overlap_tokens = overlap_tokens
        self.min_chunk_tokens = min_chunk_tokens
        self.counter = counter if counter is not None else get_token_counter(None)

    @classmethod
    def from_config(cls, config: IngestConfig) -> Chunker:
        return cls(config.chunk_tokens, config.overlap_tokens, config.min_chunk_tokens,
                   get_token_counter(config.tokenizer))

    def _sentences(self, text: str) -> list[tuple[str, int, bool]]:
        pairs = split_sentences_with_breaks(text)
        counts = self.counter.count([s for s, _ in pairs])
        out: list[tuple[str, int, bool]] = []
        for (sentence, para), n in zip(pairs, counts, strict=True):
            if n <= self.chunk_tokens:
                out.append((sentence, n, para))
                continue
            # even pieces of at most half a chunk, so they pack with the sentences around them
            parts = -(-n // max(1, self.chunk_tokens // 2))
            for j, (piece, m) in enumerate(self.counter.pieces(sentence, -(-n // parts))):
                out.append((piece, m, para and j == 0))
        return out

    def chunk(self, text: str) -> list[Chunk]:
        """Chunks of ``text`` in order; empty for text without words."""
        sents = self._sentences(text)
        groups: list[list[int]] = []
        fresh: list[int] = []  # tokens each group adds beyond the overlap it carried in
        cur: list[int] = []
        cur_tok = carried = 0
        for i, (_, n, _) in enumerate(sents):
            if cur and cur_tok + n > self.chunk_tokens:
                groups.append(cur)
                fresh.append(cur_tok - carried)
                carry: list[int] = []
                carried = 0
                for j in reversed(cur):
                    if carried + sents[j][1] > self.overlap_tokens or len(carry) + 1 == len(cur):
                        break
                    carry.insert(0, j)
                    carried += sents[j][1]
                while carry and carried + n > self.chunk_tokens:
                    carried -= sents[carry.pop(0)][1]
                cur, cur_tok = carry, carried
            cur.append(i)
            cur_tok += n
        if cur:
            groups.append(cur)
            fresh.append(cur_tok - carried)
        if len(groups) > 1 and fresh[-1] < self.min_chunk_tokens:
            tail = groups.pop()
            fresh.pop()
            groups[-1] = groups[-1] + [i for i in tail if i not in groups[-1]]
        chunks = []
        for group in groups:
            picked = [sents[i] for i in group]
            chunks.append(Chunk(_join(picked), sum(s[1] for s in picked)))
        return chunks


def chunk_text(text: str, config: IngestConfig | None = None, counter: TokenCounter | None = None) -> list[Chunk]:
    """Chunk one text with ``config`` (defaults: :class:`~ragtune.config.IngestConfig`)."""
    config = config or IngestConfig()
    chunker = Chunker(config.chunk_tokens, config.overlap_tokens, config.min_chunk_tokens,
                      counter if counter is not None else get_token_counter(config.tokenizer))
    return chunker.chunk(text)
