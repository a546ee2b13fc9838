from pydoc_data.topics import topics

from ragtune.examples import write_pydoc_topics


def test_write_pydoc_topics(tmp_path):
    assert write_pydoc_topics(tmp_path / "ex") == len(topics) > 50
    files = sorted((tmp_path / "ex").glob("*.txt"))
    assert len(files) == len(topics)
    text = (tmp_path / "ex" / "assert.txt").read_text(encoding="utf-8")
    first, underline = text.split("\n")[:2]
    assert "assert" in first and set(underline) == {"*"} and topics["assert"].strip() in text
    # deterministic: a second write gives the same bytes
    before = {f.name: f.read_bytes() for f in files}
    write_pydoc_topics(tmp_path / "ex")
    assert {f.name: f.read_bytes() for f in sorted((tmp_path / "ex").glob("*.txt"))} == before
