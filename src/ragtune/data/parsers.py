"""One parser per file format, registered by extension: bytes on disk -> documents (title + plain text).

A parser returns a :class:`ParsedFile` or raises :class:`SkipFile` with a reason a user can act on ("encrypted
PDF", "binary (contains NUL bytes)", ...). :func:`ragtune.data.ingest.ingest` turns any other exception into a
skipped file too, so a parser may let a library's own error escape.

Text decoding is hand-written around charset-normalizer because no kept library gets short GBK/GB18030 texts
right: charset-normalizer alone guesses Big5 or UTF-16 for a one-line Chinese file (see :func:`decode_text`).
"""

from __future__ import annotations

import codecs
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)


class SkipFile(Exception):
    """Raised by a parser when a file cannot be used; ``reason`` is shown to the user."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class ParsedDoc:
    title: str
    text: str
    id: str | None = None  # the record id of a jsonl document


@dataclass
class ParsedFile:
    docs: list[ParsedDoc]
    encoding: str | None = None
    warnings: list[str] = field(default_factory=list)


Parser = Callable[[Path], ParsedFile]

# --- text decoding -----------------------------------------------------------------------------------------------

_BOMS = [  # UTF-32 first: its little-endian BOM starts with UTF-16's
    (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"),
]
_SAMPLE = 1 << 16


def _utf16_without_bom(data: bytes) -> str | None:
    """``utf-16-le``/``-be`` when NUL bytes sit in every other position, as in UTF-16 of mostly-ASCII text."""
    sample = data[:_SAMPLE]
    half = len(sample) // 2
    if half == 0:
        return None
    even = sample[0::2].count(0)
    odd = sample[1::2].count(0)
    if odd >= 0.3 * half and even <= 0.02 * half:
        return "utf-16-le"
    if even >= 0.3 * half and odd <= 0.02 * half:
        return "utf-16-be"
    return None


def _plausible_gb(text: str) -> bool:
    """True when the non-ASCII characters are mostly common hanzi or CJK punctuation in GB2312's main planes.

    Western single-byte text (cp1252 "crème") often decodes as GB18030 too, but into rare characters.
    """
    common = total = 0
    for ch in text[:4000]:
        if ord(ch) < 128:
            continue
        total += 1
        b = ch.encode("gb18030")
        if len(b) == 2 and b[1] >= 0xA1 and (0xB0 <= b[0] <= 0xD7 or 0xA1 <= b[0] <= 0xA3):
            common += 1
    return total > 0 and common >= 0.8 * total


_CONTROL = re.compile("[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f-\x9f]")  # Cc without \t \n \v \f \r and ESC


def _looks_binary(text: str) -> bool:
    sample = text[:_SAMPLE]
    return bool(sample) and len(_CONTROL.findall(sample)) > 0.01 * len(sample)


def decode_text(data: bytes) -> tuple[str, str]:
    """Decode the bytes of a text file; return ``(text, encoding)`` or raise :class:`SkipFile`.

    Order: byte-order marks; UTF-16 without BOM (NUL pattern); NUL bytes anywhere else mean binary; strict UTF-8;
    GB18030 when it yields common Chinese; charset-normalizer's best guess for the rest.
    """
    for bom, enc in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(enc), "utf-8-sig" if enc == "utf-8-sig" else enc
            except UnicodeDecodeError as exc:
                raise SkipFile(f"undecodable ({enc} byte-order mark but invalid {enc}: {exc.reason})") from None
    if b"\x00" in data:
        enc = _utf16_without_bom(data)
        if enc is not None:
            try:
                return data.decode(enc), enc
            except UnicodeDecodeError:
                pass
        raise SkipFile("binary (contains NUL bytes)")
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        text = data.decode("gb18030")
        if _plausible_gb(text):
            return text, "gb18030"
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    matches = from_bytes(data)
    best = matches.best()
    if best is None:
        raise SkipFile("binary or undecodable (no text encoding fits)")
    # charset-normalizer ranks Baltic/Central-European code pages above Windows-1252 for plain French or Spanish
    # ("crème" -> "crčme"); among equally clean candidates, the far more common cp1252 wins.
    western = [m for m in matches if m.encoding == "cp1252" and m.chaos <= best.chaos + 0.01]
    if western and best.encoding != "cp1252":
        best = western[0]
    text = str(best)
    if _looks_binary(text):
        raise SkipFile("binary (control characters)")
    return text, best.encoding.replace("_", "-")


def _read_text(path: Path) -> tuple[str, str]:
    text, encoding = decode_text(path.read_bytes())
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if _looks_binary(text):
        raise SkipFile("binary (control characters)")
    return text, encoding


# --- plain text, reStructuredText, Markdown ---------------------------------------------------------------------

_UNDERLINE = re.compile(r"^[ \t]*([=\-~*^#+_`])\1{2,}[ \t]*$", re.M)


def parse_text(path: Path) -> ParsedFile:
    """Plain text (also ``.rst``): an underlined first line is the title; underline rules become blank lines."""
    text, encoding = _read_text(path)
    title = path.stem
    lines = text.lstrip("\n").split("\n", 2)
    if len(lines) >= 2 and _UNDERLINE.match(lines[1]) and 0 < len(lines[0].strip()) <= 200:
        title = lines[0].strip()
    text = _UNDERLINE.sub("", text)
    return ParsedFile([ParsedDoc(title, text)], encoding)


_MD_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\A---\n.*?\n---\n", re.S), ""),  # YAML front matter
    (re.compile(r"^[ \t]*(```|~~~).*$", re.M), ""),  # code fences (the code itself is kept)
    (re.compile(r"!\[([^\]]*)\]\([^)]*\)"), r"\1"),  # images -> alt text
    (re.compile(r"\[([^\]]+)\]\([^)]*\)"), r"\1"),  # links -> link text
    (re.compile(r"^[ \t]*\[[^\]]+\]:\s*\S+.*$", re.M), ""),  # reference-style link definitions
    (re.compile(r"<!--.*?-->", re.S), ""),  # comments
    (re.compile(r"</?[A-Za-z][^>\n]*>"), ""),  # inline HTML tags
    (re.compile(r"^(#{1,6})[ \t]+(.*?)[ \t#]*$", re.M), r"\n\2\n"),  # headings become their own paragraph
    (re.compile(r"^[ \t]*>[ \t]?", re.M), ""),  # block quotes
    (re.compile(r"^[ \t]*([-*_])([ \t]*\1){2,}[ \t]*$", re.M), ""),  # horizontal rules
    (re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1"), r"\2"),  # bold
    (re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?!\w)"), r"\1"),  # italics
    (re.compile(r"`([^`\n]+)`"), r"\1"),  # inline code
    (re.compile(r"^[ \t]*\|?[ \t]*:?-{3,}:?[ \t]*(\|[ \t]*:?-{3,}:?[ \t]*)*\|?[ \t]*$", re.M), ""),  # table rules
]
_MD_TITLE = re.compile(r"^#[ \t]+(.+?)[ \t#]*$", re.M)


def parse_markdown(path: Path) -> ParsedFile:
    """Markdown with the markup stripped lightly; the title is the first ``# `` heading, else the file stem."""
    text, encoding = _read_text(path)
    match = _MD_TITLE.search(text)
    title = match.group(1).strip() if match else path.stem
    for pattern, repl in _MD_RULES:
        text = pattern.sub(repl, text)
    return ParsedFile([ParsedDoc(title, text)], encoding)


# --- HTML ----------------------------------------------------------------------------------------------------------

_HTML_DROP = "script,style,nav,noscript,template,iframe,svg,head"
_HTML_BLOCKS = ("p,div,li,ul,ol,h1,h2,h3,h4,h5,h6,tr,table,section,article,header,footer,main,aside,pre,"
                "blockquote,dd,dt,dl,figcaption,form,hr,br,td,th")


def parse_html(path: Path) -> ParsedFile:
    """HTML via selectolax: scripts, styles and navigation dropped; block elements become paragraph breaks."""
    from selectolax.lexbor import LexborHTMLParser

    raw, encoding = _read_text(path)
    tree = LexborHTMLParser(raw)
    title_node = tree.css_first("title")
    title = " ".join(title_node.text().split()) if title_node is not None else ""
    for node in tree.css(_HTML_DROP):
        node.decompose()
    for node in tree.css(_HTML_BLOCKS):
        sep = "\n" if node.tag in ("br", "td", "th") else "\n\n"
        node.insert_before(sep)
        node.insert_after(sep)
    root = tree.body if tree.body is not None else tree.root
    text = root.text() if root is not None else ""
    text = re.sub(r"[ \t\u00a0]+", " ", text)
    text = re.sub(r" ?\n ?", "\n", text)
    return ParsedFile([ParsedDoc(title or path.stem, text)], encoding)


# --- PDF and DOCX --------------------------------------------------------------------------------------------------


def parse_pdf(path: Path) -> ParsedFile:
    """PDF text via pypdf. An encrypted PDF is opened with the empty password if it allows, else skipped."""
    import pypdf
    from pypdf.errors import DependencyError, PdfReadError

    logging.getLogger("pypdf").setLevel(logging.ERROR)  # pypdf warns per malformed object; we report per file
    try:
        reader = pypdf.PdfReader(path)
        if reader.is_encrypted:
            try:
                opened = reader.decrypt("")
            except (DependencyError, NotImplementedError, PdfReadError) as exc:
                raise SkipFile(f"encrypted PDF ({exc})") from None
            if not opened:
                raise SkipFile("encrypted PDF")
        pages = [page.extract_text() or "" for page in reader.pages]
        meta_title = reader.metadata.title if reader.metadata else None
    except SkipFile:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SkipFile(f"broken PDF ({type(exc).__name__}: {exc})") from None
    text = "\n\n".join(p.strip() for p in pages if p.strip())
    if not text.strip():
        raise SkipFile("no extractable text (a scanned PDF? run OCR first)")
    title = str(meta_title).strip() if meta_title else path.stem
    return ParsedFile([ParsedDoc(title, text)], None)


def parse_docx(path: Path) -> ParsedFile:
    """DOCX via python-docx: paragraphs and tables in document order; title from the core properties."""
    import zipfile

    import docx
    from docx.opc.exceptions import PackageNotFoundError
    from docx.table import Table

    try:
        document = docx.Document(str(path))
    except (zipfile.BadZipFile, KeyError, ValueError, PackageNotFoundError) as exc:
        raise SkipFile(f"unreadable DOCX ({type(exc).__name__}: {exc})") from None
    blocks: list[str] = []
    heading = None
    for item in document.iter_inner_content():
        if isinstance(item, Table):
            for row in item.rows:
                cells = [" ".join(c.text.split()) for c in row.cells]
                blocks.append(" | ".join(dict.fromkeys(c for c in cells if c)))
        elif item.text.strip():
            blocks.append(item.text.strip())
            style = (item.style.name if item.style is not None else "") or ""
            if heading is None and (style == "Title" or style.startswith("Heading")):
                heading = item.text.strip()
    title = (document.core_properties.title or "").strip() or heading or path.stem
    return ParsedFile([ParsedDoc(title, "\n\n".join(b for b in blocks if b))], None)


# --- jsonl: one document per line ----------------------------------------------------------------------------------


def parse_jsonl(path: Path) -> ParsedFile:
    """One document per line: an object with ``text`` and optional ``title`` and ``_id``/``id``."""
    raw, encoding = _read_text(path)
    docs: list[ParsedDoc] = []
    warnings: list[str] = []
    seen: set[str] = set()
    for lineno, line in enumerate(raw.split("\n"), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            warnings.append(f"line {lineno}: invalid JSON ({exc.msg}); skipped")
            continue
        if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
            warnings.append(f'line {lineno}: expected an object with a string "text"; skipped')
            continue
        rid = rec.get("_id", rec.get("id"))
        rid = f"L{lineno}" if rid is None or str(rid).strip() == "" else str(rid).strip()
        if rid in seen:
            warnings.append(f"line {lineno}: duplicate id {rid!r}; skipped")
            continue
        seen.add(rid)
        docs.append(ParsedDoc(str(rec.get("title") or ""), rec["text"], rid))
    if not docs:
        first = f" (first problem: {warnings[0]})" if warnings else ""
        raise SkipFile(f"no usable records{first}")
    return ParsedFile(docs, encoding, warnings)


PARSERS: dict[str, Parser] = {
    ".txt": parse_text,
    ".text": parse_text,
    ".rst": parse_text,
    ".md": parse_markdown,
    ".markdown": parse_markdown,
    ".html": parse_html,
    ".htm": parse_html,
    ".xhtml": parse_html,
    ".pdf": parse_pdf,
    ".docx": parse_docx,
    ".jsonl": parse_jsonl,
}

FORMATS: dict[str, str] = {".text": "txt", ".rst": "rst", ".markdown": "md", ".htm": "html", ".xhtml": "html"}


def get_parser(extension: str) -> Parser:
    """The parser registered for ``extension`` (``".md"``); unknown extensions are read as plain text."""
    return PARSERS.get(extension.lower(), parse_text)


def format_name(extension: str) -> str:
    ext = extension.lower()
    return FORMATS.get(ext, ext.lstrip(".") or "txt")
