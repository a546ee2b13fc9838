import pytest

from ragtune.config import IngestConfig
from ragtune.data.chunking import (
    Chunker,
    HFTokenCounter,
    SimpleTokenCounter,
    chunk_language,
    chunk_text,
    get_token_counter,
    split_sentences,
)


def test_english_sentences_and_abbreviations():
    text = ("Dr. Smith met J. Doe in the U.S. yesterday. They talked, e.g. about tea! Was it good? Yes.\n\n"
            "A new paragraph\nwrapped over two lines.\n- first item\n- second item")
    assert split_sentences(text) == [
        "Dr. Smith met J. Doe in the U.S. yesterday.", "They talked, e.g. about tea!", "Was it good?", "Yes.",
        "A new paragraph wrapped over two lines.", "- first item", "- second item"]


def test_chinese_sentences():
    text = "长城是中国古代的军事防御工程。它东起山海关，西至嘉峪关！你去过吗？我去过；很美。\n没有标点的一行\n“引号里。”后文"
    assert split_sentences(text) == ["长城是中国古代的军事防御工程。", "它东起山海关，西至嘉峪关！", "你去过吗？",
                                     "我去过；", "很美。", "没有标点的一行", "“引号里。”", "后文"]
    # ASCII ! ? ; right after hanzi also end a sentence
    assert split_sentences("真的吗?当然!") == ["真的吗?", "当然!"]


def test_chunk_language():
    assert chunk_language("plain English text") == "en"
    assert chunk_language("长城是中国古代的军事防御工程。") == "zh"


@pytest.fixture(scope="module")
def minilm_counter():
    return get_token_counter(None)


def test_default_counter_is_minilm_without_special_tokens(minilm_counter):
    assert isinstance(minilm_counter, HFTokenCounter)
    assert minilm_counter.count(["hello world", "长城"]) == [2, 2]
    long = "word " * 600  # the tokenizer file truncates at 128/512 by default: counting must not
    assert minilm_counter.count([long]) == [600]


def _english(n: int) -> str:
    return " ".join(f"Sentence number {i} talks about topic {i % 7}." for i in range(n))


def test_chunks_respect_size_and_overlap(minilm_counter):
    cfg = IngestConfig(chunk_tokens=40, overlap_tokens=12, min_chunk_tokens=4)
    chunks = chunk_text(_english(60), cfg)
    assert len(chunks) > 5
    counts = minilm_counter.count([c.text for c in chunks])
    assert max(counts) <= cfg.chunk_tokens + cfg.min_chunk_tokens
    assert [c.tokens for c in chunks] == counts  # sentence counts add up exactly for a WordPiece tokenizer
    for prev, nxt in zip(chunks, chunks[1:], strict=False):
        last = split_sentences(prev.text)[-1]
        assert nxt.text.startswith(last)  # the trailing sentence is carried over
        assert all(s.endswith(".") for s in split_sentences(nxt.text))  # whole sentences only
    # no overlap when asked for none
    plain = chunk_text(_english(60), IngestConfig(chunk_tokens=40, overlap_tokens=0))
    assert " ".join(c.text for c in plain) == _english(60)


def test_chinese_chunks_end_at_sentence_boundaries():
    text = "".join(f"第{i}句话讲的是长城的历史和它的建造过程。" for i in range(30))
    chunks = Chunker(40, 10, 4, counter=get_token_counter(None)).chunk(text)
    assert len(chunks) > 3
    for c in chunks:
        assert c.text.endswith("。") and c.text.startswith("第") and c.tokens <= 44
        assert " " not in c.text  # no spaces inserted between Chinese sentences


def test_long_sentence_split_by_tokens(minilm_counter):
    text = "alpha beta gamma delta " * 50  # 200 tokens, no sentence end
    chunks = Chunker(64, 8, 4, counter=minilm_counter).chunk(text)
    assert len(chunks) >= 4
    assert all(minilm_counter.count([c.text])[0] <= 64 for c in chunks)
    words = " ".join(c.text for c in chunks).split()
    assert words == text.split()  # nothing lost, no word cut in half


def test_short_tail_merges_into_previous_chunk():
    counter = SimpleTokenCounter()
    text = "One two three four five six seven eight. Nine ten eleven twelve thirteen fourteen fifteen sixteen. End."
    chunks = Chunker(8, 0, 4, counter=counter).chunk(text)  # "End." alone would be 1 token
    assert [c.text for c in chunks] == ["One two three four five six seven eight.",
                                        "Nine ten eleven twelve thirteen fourteen fifteen sixteen. End."]
    # a document shorter than min_chunk_tokens is still one chunk
    assert [c.text for c in Chunker(16, 0, 4, counter=counter).chunk("Hi.")] == ["Hi."]
    assert Chunker(16, 0, 4, counter=counter).chunk("  \n\n ") == []


def test_pluggable_counter():
    counter = SimpleTokenCounter(lambda texts: [len(t) for t in texts])  # characters as tokens
    chunks = Chunker(30, 0, 2, counter=counter).chunk("Short one. Another short one. A third one here.")
    assert all(len(c.text) <= 30 for c in chunks) and len(chunks) == 2


def test_overlap_must_be_smaller_than_chunk():
    with pytest.raises(ValueError, match="overlap_tokens"):
        Chunker(32, 32, counter=SimpleTokenCounter())


def test_tokenizer_from_config_path(minilm_path):
    counter = get_token_counter(minilm_path)  # a local model folder: read via its tokenizer.json
    assert isinstance(counter, HFTokenCounter) and counter.count(["hello world"]) == [2]
    chunks = chunk_text(_english(20), IngestConfig(chunk_tokens=32, overlap_tokens=0, tokenizer=minilm_path))
    assert len(chunks) > 3
