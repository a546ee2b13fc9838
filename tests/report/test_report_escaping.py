"""Hostile text from documents, queries, names and notes is shown as text, never run as markup."""

from __future__ import annotations

import copy
import json
from html.parser import HTMLParser

import pytest
from report_helpers import HOSTILE

from ragtune.report import build_report_data
from ragtune.report.html import render_html
from ragtune.report.render import render_markdown

ATTRIBUTE_BREAK = '" onmouseover="window.__pwned=2'
ESCAPED = "&lt;script&gt;window.__pwned=1&lt;/script&gt;"


def _poison(obj):
    """Every string value in ``obj`` gets hostile markup appended."""
    if isinstance(obj, dict):
        return {k: _poison(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_poison(v) for v in obj]
    if isinstance(obj, str):
        return obj + " " + HOSTILE + ATTRIBUTE_BREAK
    return obj


class _Tags(HTMLParser):
    """Every element and attribute name the browser would build from the page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attributes: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.add(tag)
        self.attributes.update(name for name, _ in attrs)


def _parse(html: str) -> _Tags:
    parser = _Tags()
    parser.feed(html)
    return parser


@pytest.fixture(scope="module")
def poisoned(small_run) -> dict:
    data = build_report_data(small_run)
    bad = copy.deepcopy(data)
    bad["title"] = "docs " + HOSTILE
    for ex in bad["examples"]["regressions"] + bad["examples"]["gains"]:
        ex["query"] += HOSTILE + ATTRIBUTE_BREAK
        for hit in (h for r in ex["returned"].values() for h in r["top"]):
            hit["text"] += HOSTILE + ATTRIBUTE_BREAK  # also goes into a title="" attribute
    bad["generation"] = _poison(bad["generation"])
    bad["generation"]["samples_by_verdict"][HOSTILE] = bad["generation"]["samples"][:2]  # a verdict name
    bad["generation"]["filters"] = [{"step": HOSTILE, "kept": 3, "dropped": 1, "reasons": {HOSTILE: 1}}]
    bad["manifest"] = _poison(bad["manifest"])
    bad["config"] = _poison(bad["config"])
    bad["guard"] = {"verdict": "fail", "message": HOSTILE, "dataset": HOSTILE + ATTRIBUTE_BREAK}
    ev = bad["evaluation"]
    ev["systems"][f"evil{HOSTILE}"] = ev["systems"]["bm25"]  # a system named with markup
    return bad


def test_html_has_no_live_markup_from_the_data(poisoned):
    html = render_html(poisoned)
    assert "<script" not in html.lower()  # the page itself has no script, so any <script is injected
    parsed = _parse(html)
    assert "script" not in parsed.tags
    assert not {a for a in parsed.attributes if a.startswith("on")}  # no attribute broke out of its quotes
    assert parsed.attributes <= {"lang", "charset", "http-equiv", "content", "name", "href", "id", "class",
                                 "title", "style", "viewbox", "role", "aria-label", "xmlns", "x", "y", "width",
                                 "height", "x1", "y1", "x2", "y2", "points", "text-anchor"}
    assert html.count(ESCAPED) >= 10
    assert "{{" in html  # template syntax in the data is printed, not evaluated
    assert 'http-equiv="Content-Security-Policy"' in html and "default-src 'none'" in html


def test_the_real_run_escapes_the_injected_chunk(small_run):
    html = (small_run / "report.html").read_text(encoding="utf-8")
    assert HOSTILE in (small_run / "report.json").read_text(encoding="utf-8"), "the hostile chunk did not reach the report"
    assert ESCAPED in html and "<script" not in html.lower()
    assert "script" not in _parse(html).tags


def test_markdown_escapes_html_and_table_breaks(poisoned):
    md = render_markdown(poisoned)
    assert "<script" not in md and ESCAPED.replace("&lt;", "&lt;") in md
    row = next(line for line in md.splitlines() if line.startswith("| evil"))
    assert row.count("|") == len(poisoned["evaluation"]["metrics"]) + 3  # no extra cell from the name


def test_report_json_keeps_the_text_exactly(small_run):
    data = json.loads((small_run / "report.json").read_text(encoding="utf-8"))
    assert HOSTILE in json.dumps(data, ensure_ascii=False)  # data stays data; only renderers escape
