"""Shared fixtures: a tiny random sentence-transformers model, the packaged MiniLM, and a toy BEIR set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

TOY_DOCS = {
    "d1": ("Photosynthesis", "Plants turn sunlight, water and carbon dioxide into glucose and oxygen. "
                             "Chlorophyll in the leaves absorbs the light."),
    "d2": ("Volcanoes", "A volcano erupts when magma rises through the crust. Lava flows and ash clouds follow "
                        "the eruption."),
    "d3": ("Python lists", "A Python list is a mutable sequence. Use append to add an item and pop to remove "
                           "the last one."),
    "d4": ("Tea", "Green tea is made from unoxidised leaves of Camellia sinensis. It is brewed with water below "
                  "boiling point."),
    "d5": ("Rivers", "The Nile flows north through Egypt into the Mediterranean Sea. It is one of the longest "
                     "rivers."),
    "d6": ("长城", "长城是中国古代的军事防御工程。它东起山海关，西至嘉峪关。"),
}
TOY_QUERIES = {
    "q1": ("how do plants make glucose from sunlight", "d1"),
    "q2": ("what happens when magma rises", "d2"),
    "q3": ("how to add an item to a python list", "d3"),
    "q4": ("which river flows through egypt", "d5"),
    "q5": ("长城 东起 哪里", "d6"),
}


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``): modules that
    encode or train many tiny batches run several times faster on a small shared CPU without threads spinning."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def minilm_path() -> str:
    from ragtune.models import packaged_minilm_path

    return packaged_minilm_path()


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory, minilm_path) -> str:
    """A randomly initialised 2-layer BERT (hidden 32) with MiniLM's tokenizer, saved as a ST directory."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny-bert")
    hf_dir = out / "hf"
    tok = AutoTokenizer.from_pretrained(minilm_path)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=512)
    BertModel(cfg).save_pretrained(hf_dir)
    tok.save_pretrained(hf_dir)
    word = Transformer(str(hf_dir), max_seq_length=128)
    pool = Pooling(word.get_embedding_dimension(), pooling_mode="mean")
    model = SentenceTransformer(modules=[word, pool], device="cpu")
    st_dir = out / "st"
    model.save(str(st_dir))
    return str(st_dir)


@pytest.fixture(scope="session")
def tiny_cross_encoder_path(tmp_path_factory, minilm_path) -> str:
    """A randomly initialised 2-layer BERT with a one-logit head and MiniLM's tokenizer, saved as a CrossEncoder."""
    import torch
    from sentence_transformers import CrossEncoder
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny-ce")
    tok = AutoTokenizer.from_pretrained(minilm_path)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=512, num_labels=1, initializer_range=0.2,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # learns in a few steps
    BertForSequenceClassification(cfg).save_pretrained(out / "hf")
    tok.save_pretrained(out / "hf")
    CrossEncoder(str(out / "hf"), device="cpu", max_length=128).save(str(out / "ce"))
    return str(out / "ce")


@pytest.fixture()
def toy_beir(tmp_path) -> Path:
    """A tiny BEIR directory (English + one Chinese document) with qrels/test.tsv."""
    root = tmp_path / "toy"
    (root / "qrels").mkdir(parents=True)
    with open(root / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for did, (title, text) in TOY_DOCS.items():
            fh.write(json.dumps({"_id": did, "title": title, "text": text}, ensure_ascii=False) + "\n")
    with open(root / "queries.jsonl", "w", encoding="utf-8") as fh:
        for qid, (text, _) in TOY_QUERIES.items():
            fh.write(json.dumps({"_id": qid, "text": text}, ensure_ascii=False) + "\n")
    with open(root / "qrels" / "test.tsv", "w", encoding="utf-8") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for qid, (_, did) in TOY_QUERIES.items():
            fh.write(f"{qid}\t{did}\t1\n")
    return root
