"""End to end: a real run's report.html opened in headless Chromium (DevTools protocol over a pipe).

Chromium is part of the test environment (``bash scripts/test.sh`` installs Debian's ``chromium`` and
``fonts-noto-cjk``); when it is missing these tests fail rather than skip. Set ``RAGTUNE_REPORT_SCREENSHOT`` to a
path to keep the screenshot.
"""

from __future__ import annotations

import json
import os
import shutil
import struct

import pytest
from chromium_cdp import Chromium, find_chromium
from report_helpers import HOSTILE, ZH_MARKER

SECTIONS = ["verdict", "results", "plots", "examples", "generation", "guard", "pipeline", "data", "training", "cost", "manifest"]


@pytest.fixture(scope="module")
def browser():
    if find_chromium() is None:
        pytest.fail("chromium is not installed: run the tests with `bash scripts/test.sh`, which installs Debian's "
                    "chromium and fonts-noto-cjk (or `apt-get install chromium fonts-noto-cjk`)")
    with Chromium(timeout=60) as b:
        yield b


def _png_size(path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", head[16:24])


def test_the_report_loads_cleanly_in_chromium(browser, small_run, tmp_path):
    html_path = small_run / "report.html"
    assert HOSTILE in (small_run / "report.json").read_text(encoding="utf-8"), "the hostile chunk is not in the run"
    page = browser.open(html_path.resolve().as_uri(), width=1280, height=2400)

    assert page.load.errors == [], page.load.errors
    assert page.evaluate("document.readyState") == "complete"
    ids = page.evaluate("[...document.querySelectorAll('main > section')].map(s => s.id)")
    assert ids == SECTIONS
    assert page.evaluate("document.querySelectorAll('#plots svg').length") >= 5
    systems = json.loads((small_run / "report.json").read_text(encoding="utf-8"))["evaluation"]["systems"]
    assert len(systems) >= 5  # bm25, base, fine-tuned, hybrid, hybrid+rerank (+ the blend served, if one is)
    assert page.evaluate("document.querySelectorAll('#results tr').length") == 1 + len(systems)  # + the header
    assert page.evaluate("document.querySelector('#verdict .verdict-text').innerText.length") > 20
    # the injected chunk is on the page as text, and never ran
    text = page.evaluate("document.body.innerText")
    assert HOSTILE in text
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.evaluate("document.scripts.length") == 0
    # Chinese text arrived intact and is tagged for CJK fonts; nothing was fetched over the network
    assert ZH_MARKER in text
    assert page.evaluate("document.querySelectorAll('[lang=\"zh-Hans\"]').length") >= 1
    assert page.evaluate("performance.getEntriesByType('resource').length") == 0

    shot = page.screenshot(tmp_path / "report.png")
    width, height = _png_size(shot)
    assert (width, height) == (1280, 2400) and shot.stat().st_size > 50_000
    if os.environ.get("RAGTUNE_REPORT_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["RAGTUNE_REPORT_SCREENSHOT"])


def test_the_harness_would_see_a_script_run(browser, tmp_path):
    """The checks above are not vacuous: an unescaped script would set the flag and log the error."""
    page_path = tmp_path / "bad.html"
    page_path.write_text(f"<!doctype html><title>bad</title>{HOSTILE}<script>console.error('boom');"
                         "undefined_function()</script>", encoding="utf-8")
    page = browser.open(page_path.resolve().as_uri(), width=400, height=300)
    assert page.evaluate("window.__pwned") == 1
    errors = " ".join(page.load.errors)
    assert "boom" in errors and "undefined_function" in errors
