import codecs
import io

import pytest

from ragtune.data.parsers import (
    PARSERS,
    SkipFile,
    decode_text,
    get_parser,
    parse_docx,
    parse_html,
    parse_jsonl,
    parse_markdown,
    parse_pdf,
    parse_text,
)

ZH = "长城是中国古代的军事防御工程。它东起山海关，西至嘉峪关！你去过吗？"


def minimal_pdf(lines: list[str]) -> bytes:
    """A one-page PDF with Helvetica text, written by hand (objects + xref table)."""
    ops = "BT /F1 12 Tf 72 720 Td 14 TL " + " ".join(f"({line}) Tj T*" for line in lines) + " ET"
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        "/Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(ops)} >>\nstream\n{ops}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objects, 1):
        offsets.append(out.tell())
        out.write(f"{i} 0 obj\n{body}\nendobj\n".encode("latin-1"))
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    for off in offsets:
        out.write(f"{off:010d} 00000 n \n".encode())
    out.write(f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode())
    return out.getvalue()


def encrypted_pdf(lines: list[str], user: str, owner: str | None = None) -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(minimal_pdf(lines))))
    writer.encrypt(user_password=user, owner_password=owner)
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


# --- encodings ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "encoding"),
    [
        (b"Plain ASCII text.", "utf-8"),
        ("Café crème, naïve.".encode(), "utf-8"),
        (codecs.BOM_UTF8 + ZH.encode("utf-8"), "utf-8-sig"),
        (ZH.encode("utf-16"), "utf-16"),  # with BOM
        ("Hello UTF-16 without a BOM.".encode("utf-16-le"), "utf-16-le"),
        ("Hello UTF-16 without a BOM.".encode("utf-16-be"), "utf-16-be"),
        (ZH.encode("utf-16-le"), "utf-16-le"),  # no NUL bytes: charset-normalizer finds it
        (ZH.encode("gbk"), "gb18030"),
        ("中文测试。".encode("gbk"), "gb18030"),  # too short for statistical detectors
        ("中华人民共和国成立于1949年。".encode("gb18030"), "gb18030"),
    ],
)
def test_decode_text(data, encoding):
    text, enc = decode_text(data)
    assert enc == encoding
    assert text.lstrip("\ufeff") in {ZH, "Plain ASCII text.", "Café crème, naïve.", "Hello UTF-16 without a BOM.",
                                     "中文测试。", "中华人民共和国成立于1949年。"}


def test_western_single_byte_text_is_not_mistaken_for_chinese():
    data = ("Le café et la crème brûlée sont très appréciés à Paris, où l'on déguste aussi des éclairs. " * 5
            ).encode("cp1252")
    text, enc = decode_text(data)
    assert enc != "gb18030" and "crème brûlée" in text


def test_binary_is_skipped():
    with pytest.raises(SkipFile, match="binary"):
        decode_text(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4)


# --- formats -----------------------------------------------------------------------------------------------------


def test_text_title_from_underlined_first_line(tmp_path):
    p = tmp_path / "assert.txt"
    p.write_text('The "assert" statement\n**********************\n\nAssert statements are handy.\n',
                 encoding="utf-8")
    parsed = parse_text(p)
    assert parsed.docs[0].title == 'The "assert" statement' and "*****" not in parsed.docs[0].text
    (tmp_path / "plain.txt").write_text("No heading here.\nJust text.", encoding="utf-8")
    assert parse_text(tmp_path / "plain.txt").docs[0].title == "plain"


def test_markdown_markup_stripped(tmp_path):
    p = tmp_path / "guide.md"
    p.write_text("---\nauthor: x\n---\n# Getting started\n\nInstall with `pip install ragtune`. See the "
                 "[docs](https://example.org) and **bold** text.\n\n![diagram](d.png)\n\n## Next\n\n- item *one*\n",
                 encoding="utf-8")
    doc = parse_markdown(p).docs[0]
    assert doc.title == "Getting started"
    for gone in ("`", "](", "**", "#", "author", "https://"):
        assert gone not in doc.text
    assert "pip install ragtune" in doc.text and "See the docs and bold text." in doc.text
    assert "diagram" in doc.text and "item one" in doc.text
    (tmp_path / "notitle.md").write_text("Some *text*.", encoding="utf-8")
    assert parse_markdown(tmp_path / "notitle.md").docs[0].title == "notitle"


def test_html_drops_scripts_styles_nav(tmp_path):
    p = tmp_path / "page.html"
    p.write_text("<html><head><title> The  Page </title><style>.x{color:red}</style></head><body>"
                 "<nav>Home | About</nav><script>var secret = 1;</script><h1>Heading</h1>"
                 "<p>First <b>bold</b> paragraph.</p><div>Block<p>inner</p></div><noscript>nojs</noscript>"
                 "</body></html>", encoding="utf-8")
    doc = parse_html(p).docs[0]
    assert doc.title == "The Page"
    for gone in ("secret", "color", "Home", "nojs"):
        assert gone not in doc.text
    assert "First bold paragraph." in doc.text
    assert "Heading\n" in doc.text and "Block\n" in doc.text and "inner" in doc.text


def test_pdf_text_and_title(tmp_path):
    p = tmp_path / "paper.pdf"
    p.write_bytes(minimal_pdf(["Hello from a PDF. It has two sentences.", "Second line here."]))
    parsed = parse_pdf(p)
    assert "Hello from a PDF." in parsed.docs[0].text and "Second line here." in parsed.docs[0].text
    assert parsed.docs[0].title == "paper"


def test_encrypted_pdf(tmp_path):
    locked = tmp_path / "locked.pdf"
    locked.write_bytes(encrypted_pdf(["Secret text."], user="pw"))
    with pytest.raises(SkipFile, match="^encrypted PDF"):
        parse_pdf(locked)
    # an owner password alone (empty user password) still opens
    owner_only = tmp_path / "owner.pdf"
    owner_only.write_bytes(encrypted_pdf(["Open text."], user="", owner="owner"))
    assert "Open text." in parse_pdf(owner_only).docs[0].text


def test_broken_pdf(tmp_path):
    p = tmp_path / "broken.pdf"
    p.write_bytes(b"%PDF-1.4\n" + bytes(range(1, 200)) * 3)
    with pytest.raises(SkipFile, match="broken PDF"):
        parse_pdf(p)


def test_docx_paragraphs_tables_title(tmp_path):
    import docx

    d = docx.Document()
    d.add_heading("Quarterly report", level=1)
    d.add_paragraph("Revenue grew. Costs fell.")
    table = d.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text = "region"
    table.rows[0].cells[1].text = "north"
    d.add_paragraph("After the table.")
    p = tmp_path / "report.docx"
    d.save(p)
    doc = parse_docx(p).docs[0]
    assert doc.title == "Quarterly report"
    assert doc.text.index("Costs fell.") < doc.text.index("region | north") < doc.text.index("After the table.")
    (tmp_path / "bad.docx").write_bytes(b"not a zip")
    with pytest.raises(SkipFile, match="unreadable DOCX"):
        parse_docx(tmp_path / "bad.docx")


def test_jsonl_records(tmp_path):
    p = tmp_path / "docs.jsonl"
    p.write_text('{"_id": "a", "title": "A", "text": "alpha"}\n{"id": 7, "text": "seven"}\n\n'
                 '{"text": "no id"}\nnot json\n{"title": "no text"}\n', encoding="utf-8")
    parsed = parse_jsonl(p)
    assert [(d.id, d.title, d.text) for d in parsed.docs] == [("a", "A", "alpha"), ("7", "", "seven"),
                                                            ("L4", "", "no id")]
    assert len(parsed.warnings) == 2 and parsed.warnings[0].startswith("line 5")
    (tmp_path / "bad.jsonl").write_text("nope\n", encoding="utf-8")
    with pytest.raises(SkipFile, match="no usable records"):
        parse_jsonl(tmp_path / "bad.jsonl")


def test_registry():
    assert PARSERS[".md"] is parse_markdown and PARSERS[".pdf"] is parse_pdf
    assert get_parser(".HTML") is parse_html and get_parser(".log") is parse_text
