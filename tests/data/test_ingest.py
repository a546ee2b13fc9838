import codecs
import io
import json
import re

import pytest

from ragtune.config import IngestConfig
from ragtune.data.beir import load_corpus
from ragtune.data.chunking import get_token_counter
from ragtune.data.ingest import SkippedFile, chunk_id_prefix, ingest, write_ingest
from ragtune.errors import ConfigError

ZH = "长城是中国古代的军事防御工程。它东起山海关，西至嘉峪关！全长两万多公里。你去过吗？"
EN = ("Photosynthesis turns sunlight, water and carbon dioxide into glucose. Chlorophyll absorbs the light. "
      "Plants release oxygen as a by-product. ")
FACTS = " ".join(f"Fact number {i} is about plants." for i in range(30))  # 7 tokens per sentence


def _pdf(lines: list[str]) -> bytes:
    """A one-page text PDF written by hand (see tests/data/test_parsers.py for the commented version)."""
    ops = "BT /F1 12 Tf 72 720 Td 14 TL " + " ".join(f"({line}) Tj T*" for line in lines) + " ET"
    objects = ["<< /Type /Catalog /Pages 2 0 R >>", "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
               "/Resources << /Font << /F1 5 0 R >> >> >>",
               f"<< /Length {len(ops)} >>\nstream\n{ops}\nendstream",
               "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out = io.BytesIO(b"%PDF-1.4\n")
    out.seek(0, 2)
    offsets = []
    for i, body in enumerate(objects, 1):
        offsets.append(out.tell())
        out.write(f"{i} 0 obj\n{body}\nendobj\n".encode("latin-1"))
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    out.write("".join(f"{o:010d} 00000 n \n" for o in offsets).encode())
    out.write(f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode())
    return out.getvalue()


@pytest.fixture()
def docs_dir(tmp_path):
    import docx
    from pypdf import PdfReader, PdfWriter

    root = tmp_path / "docs"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / "en.txt").write_text(EN + FACTS, encoding="utf-8")
    (root / "bom.txt").write_bytes(codecs.BOM_UTF8 + b"Volcanoes erupt when magma rises. Ash follows.")
    (root / "sub" / "zh-gbk.txt").write_bytes(ZH.encode("gbk"))
    (root / "sub" / "utf16.txt").write_bytes("Tea is brewed below boiling point. Green tea is unoxidised."
                                             .encode("utf-16"))
    (root / "sub" / "guide.md").write_text("# Guide\n\nInstall it with `pip`. Then run **it**.\n", encoding="utf-8")
    (root / "sub" / "deeper" / "page.html").write_text(
        "<html><head><title>Rivers</title><script>var x = 1;</script></head><body><nav>menu</nav>"
        "<p>The Nile flows north through Egypt.</p></body></html>", encoding="utf-8")
    (root / "paper.pdf").write_bytes(_pdf(["A PDF about glaciers. Ice moves slowly downhill."]))
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(_pdf(["Secret."]))))
    writer.encrypt("pw")
    writer.write(root / "locked.pdf")
    (root / "broken.pdf").write_bytes(b"%PDF-1.7\n" + b"\x01garbage" * 50)
    d = docx.Document()
    d.add_paragraph("A Word document about bridges. Suspension bridges hang from cables.")
    d.save(root / "bridges.docx")
    (root / "records.jsonl").write_text(
        json.dumps({"_id": "r1", "title": "Bees", "text": "Bees make honey from nectar."}) + "\n"
        + json.dumps({"_id": "r2", "text": "Ants live in colonies."}) + "\n", encoding="utf-8")
    (root / "zcopy.txt").write_text(EN + FACTS, encoding="utf-8")  # exact duplicate of en.txt
    (root / "image.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    (root / "empty.md").write_bytes(b"")
    (root / "blank.txt").write_text("   \n\n  ", encoding="utf-8")
    (root / "data.xyz").write_text("whatever", encoding="utf-8")
    (root / ".hidden.txt").write_text("hidden file", encoding="utf-8")
    (root / ".git" / "config.txt").write_text("hidden dir", encoding="utf-8")
    return root


def test_ingest_mixed_folder(docs_dir):
    result = ingest(docs_dir, IngestConfig(chunk_tokens=64, overlap_tokens=8))
    skipped = {s.path: s.reason for s in result.skipped}
    assert skipped == {
        "blank.txt": "empty",
        "broken.pdf": skipped["broken.pdf"],
        "data.xyz": "unsupported extension .xyz",
        "empty.md": "empty",
        "image.txt": "binary (contains NUL bytes)",
        "locked.pdf": "encrypted PDF",
    }
    assert skipped["broken.pdf"].startswith("broken PDF")
    docs = {d.path: d for d in result.documents}
    assert sorted(docs) == ["bom.txt", "bridges.docx", "en.txt", "paper.pdf", "records.jsonl",
                            "sub/deeper/page.html", "sub/guide.md", "sub/utf16.txt", "sub/zh-gbk.txt", "zcopy.txt"]
    assert docs["sub/zh-gbk.txt"].encoding == "gb18030" and docs["bom.txt"].encoding == "utf-8-sig"
    assert docs["sub/utf16.txt"].encoding == "utf-16" and docs["paper.pdf"].format == "pdf"
    assert docs["records.jsonl"].records == 2
    # zcopy.txt repeats en.txt: its chunks are removed as duplicates, the first file keeps them
    assert docs["zcopy.txt"].chunks == 0 and result.duplicates_removed >= docs["en.txt"].chunks > 0
    by_doc = {}
    for cid, chunk in result.corpus.items():
        by_doc.setdefault(chunk["doc"], []).append((cid, chunk))
    assert set(by_doc) == {"bom.txt", "bridges.docx", "en.txt", "paper.pdf", "records.jsonl#r1",
                           "records.jsonl#r2", "sub/deeper/page.html", "sub/guide.md", "sub/utf16.txt",
                           "sub/zh-gbk.txt"}
    (_, zh), = by_doc["sub/zh-gbk.txt"]
    assert zh["text"] == ZH and zh["lang"] == "zh" and zh["title"] == "zh-gbk" and zh["chunk"] == 0
    assert by_doc["bom.txt"][0][1]["text"].startswith("Volcanoes")
    assert by_doc["sub/utf16.txt"][0][1]["text"].startswith("Tea is brewed")
    assert by_doc["sub/deeper/page.html"][0][1] | {} == {
        "title": "Rivers", "text": "The Nile flows north through Egypt.", "doc": "sub/deeper/page.html",
        "chunk": 0, "lang": "en"}
    assert by_doc["records.jsonl#r1"][0][1]["title"] == "Bees"
    assert "r1" in by_doc["records.jsonl#r1"][0][0]
    assert by_doc["sub/guide.md"][0][1]["text"] == "Guide\nInstall it with pip. Then run it."
    assert all(c["lang"] == "en" for d, cs in by_doc.items() if d != "sub/zh-gbk.txt" for _, c in cs)


def test_chunk_ids_stable_and_independent_of_other_files(docs_dir):
    cfg = IngestConfig(chunk_tokens=32, overlap_tokens=8)
    first = ingest(docs_dir, cfg)
    assert list(ingest(docs_dir, cfg).corpus) == list(first.corpus)
    (docs_dir / "aaa-new.txt").write_text("A new file sorts first. It must not renumber the others.",
                                          encoding="utf-8")
    again = ingest(docs_dir, cfg)
    assert set(first.corpus) < set(again.corpus)
    assert all(cid.endswith(f"-{c['chunk']}") for cid, c in again.corpus.items())
    assert chunk_id_prefix("sub/deeper/page.html").startswith("sub-deeper-page-")
    assert chunk_id_prefix("r.jsonl", "Doc 7").startswith("r-doc-7-")
    assert chunk_id_prefix("r.jsonl", "a") != chunk_id_prefix("r.jsonl", "b")


def test_chunks_within_token_budget(docs_dir):
    cfg = IngestConfig(chunk_tokens=24, overlap_tokens=8, min_chunk_tokens=4)
    result = ingest(docs_dir, cfg)
    counts = get_token_counter(None).count([c["text"] for c in result.corpus.values()])
    assert max(counts) <= cfg.chunk_tokens + cfg.min_chunk_tokens
    en = [c["text"] for c in result.corpus.values() if c["doc"] == "en.txt"]
    assert len(en) >= 5
    for prev, nxt in zip(en[2:], en[3:], strict=False):  # past the long first sentences, the last sentence is carried over
        assert nxt.startswith(prev.rsplit(". ", 1)[-1])


def test_size_limit_and_write(docs_dir, tmp_path):
    result = ingest(docs_dir, IngestConfig(max_file_mb=0.0001))  # 100 bytes
    reasons = {s.path: s.reason for s in result.skipped}
    assert re.fullmatch(r"too large \(0\.00\d+ MB > 0\.0001 MB limit; raise ingest\.max_file_mb\)", reasons["en.txt"])
    assert "bom.txt" not in reasons  # 50 bytes
    out = tmp_path / "out"
    report = write_ingest(result, out)
    assert load_corpus(out / "corpus.jsonl") == result.corpus
    on_disk = json.loads((out / "ingest-report.json").read_text(encoding="utf-8"))
    assert on_disk == report and report["chunks"] == len(result.corpus)
    assert {"path": "data.xyz", "reason": "unsupported extension .xyz"} in report["skipped"]


def test_parser_crash_becomes_skip(docs_dir, monkeypatch):
    from ragtune.data import parsers

    def boom(path):
        raise RuntimeError("library bug")

    monkeypatch.setitem(parsers.PARSERS, ".md", boom)
    result = ingest(docs_dir)
    assert SkippedFile("sub/guide.md", "parse error (RuntimeError: library bug)") in result.skipped


def test_bad_input_dir(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        ingest(tmp_path / "missing")
    (tmp_path / "f.txt").write_text("x", encoding="utf-8")
    with pytest.raises(ConfigError, match="not a directory"):
        ingest(tmp_path / "f.txt")
