"""Fine-tune a sentence-transformers bi-encoder on (query, positive chunk) pairs with in-batch negatives.

``train_embedding(train_set, EmbeddingTrainConfig, output_dir)`` trains with
:class:`~sentence_transformers.sentence_transformer.losses.MultipleNegativesRankingLoss` and writes::

    output_dir/model/            a plain sentence-transformers directory (written atomically)
    output_dir/train-log.json    loss per logging step, evaluations, steps, pairs, seconds
    output_dir/checkpoints/      trainer checkpoints while training; removed after success

Calling it again into the same ``output_dir`` after an interruption resumes from the last complete checkpoint,
provided the data and configuration are unchanged (a fingerprint guards this).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import shutil
import sys
import time
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from sentence_transformers.base.sampler import DefaultBatchSampler
from transformers import TrainerCallback

from ragtune._io import atomic_dir, atomic_write_json, text_sha1
from ragtune.config import EmbeddingTrainConfig
from ragtune.data.beir import BeirDataset, Corpus, Qrels, Queries
from ragtune.errors import DataFormatError
from ragtune.workspace import config_key

logger = logging.getLogger(__name__)

_FINGERPRINT = "ragtune-fingerprint.json"


def passage_text(doc: dict) -> str:
    """How a chunk is shown to the encoder: ``"title text"`` (BEIR's convention), or just the text."""
    title = str(doc.get("title") or "").strip()
    text = str(doc.get("text") or "").strip()
    return f"{title} {text}" if title else text


@dataclass(frozen=True)
class Pair:
    """One training example: a query, the text of its positive chunk, the chunk id and its source document."""

    query: str
    positive: str
    positive_id: str
    doc_id: str
    query_id: str = ""


def _masked_text(text: str, query: str, meta: dict) -> str:
    """``text`` without the ICT query sentence: by its recorded span, else by exact match; unchanged if absent."""
    from ragtune.generate.pseudo import cut_spans

    span = meta.get("span")
    if isinstance(span, list | tuple) and len(span) == 2 and " ".join(text[span[0]:span[1]].split()) == query:
        return cut_spans(text, [tuple(span)])
    squashed = " ".join(text.split())
    if query and query in squashed:
        return " ".join(squashed.replace(query, " ", 1).split())
    return text


def build_pairs(corpus: Corpus, queries: Queries, qrels: Qrels, metadata: dict[str, dict] | None = None,
                seed: int = 42) -> list[Pair]:
    """One :class:`Pair` per positive judgement (score > 0) whose query and chunk exist, shuffled by ``seed``.

    ``positive_id`` is the chunk id (a chunk is a BEIR document); ``doc_id`` is the chunk's ``doc`` field (the
    source file it was cut from) when present, else the chunk id. When ``metadata[qid]["mask"]`` is true (ICT),
    the query sentence is cut from the positive passage. Duplicate (query text, chunk) pairs are kept once.
    """
    metadata = metadata or {}
    pairs: list[Pair] = []
    seen: set[tuple[str, str]] = set()
    for qid, judged in qrels.items():
        query = queries.get(qid)
        if not query:
            continue
        meta = metadata.get(qid) or {}
        for did, score in judged.items():
            doc = corpus.get(did)
            if score <= 0 or doc is None or (query, did) in seen:
                continue
            seen.add((query, did))
            text = doc.get("text") or ""
            if meta.get("mask"):
                text = _masked_text(text, query, meta)
            positive = passage_text({"title": doc.get("title"), "text": text})
            pairs.append(Pair(query, positive, did, str(doc.get("doc") or did), qid))
    random.Random(seed).shuffle(pairs)
    return pairs


class NoSharedPositiveBatchSampler(DefaultBatchSampler):
    """Batches in which no two examples share a key (the positive chunk id), so no in-batch negative is a positive.

    ``keys[i]`` is the key of dataset row ``i``. Rows are shuffled with ``seed + epoch`` and placed first-fit
    into the open batches that do not hold their key yet; a batch is emitted when full. Batches left partial
    at the end are emitted too, unless ``drop_last`` (or they hold a single example). Deterministic per epoch, so resuming mid-epoch replays
    the same batches. Pass ``functools.partial(NoSharedPositiveBatchSampler, keys=keys)`` as
    ``SentenceTransformerTrainingArguments(batch_sampler=...)``.
    """

    def __init__(self, dataset: Any, batch_size: int, drop_last: bool, valid_label_columns: list[str] | None = None,
                 generator: Any = None, seed: int = 0, *, keys: Sequence[Hashable]) -> None:
        super().__init__(dataset, batch_size=batch_size, drop_last=drop_last,
                         valid_label_columns=valid_label_columns, generator=generator, seed=seed)
        if len(keys) != len(dataset):
            raise ValueError(f"keys has {len(keys)} entries but the dataset has {len(dataset)} rows")
        self.keys = list(keys)
        self._cached: tuple[int, list[list[int]]] | None = None

    def batches(self, epoch: int) -> list[list[int]]:
        if self._cached is not None and self._cached[0] == epoch:
            return self._cached[1]
        order = list(range(len(self.keys)))
        random.Random(f"{self.seed}:{epoch}").shuffle(order)
        full: list[list[int]] = []
        open_: list[tuple[list[int], set[Hashable]]] = []
        for idx in order:
            key = self.keys[idx]
            for pos, (batch, held) in enumerate(open_):
                if key not in held:
                    batch.append(idx)
                    held.add(key)
                    if len(batch) == self.batch_size:
                        full.append(batch)
                        del open_[pos]
                    break
            else:
                if self.batch_size == 1:
                    full.append([idx])
                else:
                    open_.append(([idx], {key}))
        if not self.drop_last:  # a lone example has no in-batch negative: its loss is 0, the step wasted
            full.extend(batch for batch, _ in open_ if len(batch) > 1)
        self._cached = (epoch, full)
        return full

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches(self.epoch)

    def __len__(self) -> int:
        return len(self.batches(self.epoch))


@dataclass
class TrainResult:
    model_dir: Path
    log_path: Path
    steps: int
    n_pairs: int
    batch_size: int
    seconds: float
    resumed_from_step: int | None = None
    final_loss: float | None = None
    losses: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["model_dir"], d["log_path"] = str(self.model_dir), str(self.log_path)
        return d


class _Progress(TrainerCallback):
    """A stderr progress bar that follows ragtune's log level; checkpoints every ``save_steps`` steps or
    ``save_every_s`` seconds (never at the last step: the final model is saved separately); a last evaluation
    at the final step."""

    def __init__(self, save_steps: int | None, save_every_s: float | None, show: bool, eval_at_end: bool) -> None:
        self.save_steps, self.save_every_s, self.show = save_steps, save_every_s, show
        self.eval_at_end = eval_at_end
        self.bar: Any = None
        self.last_save = time.monotonic()

    def on_train_begin(self, args, state, control, **kwargs):
        from tqdm.auto import tqdm

        self.last_save = time.monotonic()
        self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="fine-tuning", unit="step",
                        file=sys.stderr, disable=not self.show, dynamic_ncols=True)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)
        if state.global_step >= state.max_steps:
            control.should_evaluate = control.should_evaluate or self.eval_at_end
            return
        due_steps = self.save_steps is not None and state.global_step % self.save_steps == 0
        due_time = self.save_every_s is not None and time.monotonic() - self.last_save >= self.save_every_s
        if due_steps or due_time:
            control.should_save = True

    def on_save(self, args, state, control, **kwargs):
        self.last_save = time.monotonic()

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" in logs and self.bar is not None:
            self.bar.set_postfix(loss=f"{logs['loss']:.4f}")
        logger.debug("step %d: %s", state.global_step, logs)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()


def _as_training_data(train: Any) -> tuple[Corpus, Queries, Qrels, dict[str, dict]]:
    if isinstance(train, BeirDataset):
        return train.corpus, train.queries, train.qrels, train.query_metadata
    if isinstance(train, tuple | list) and len(train) in (3, 4):
        corpus, queries, qrels, *rest = train
        return corpus, queries, qrels, (rest[0] if rest else None) or {}
    raise TypeError("train must be a BeirDataset or a tuple (corpus, queries, qrels[, metadata]), got "
                    f"{type(train).__name__}")


def _latest_checkpoint(ckpt_dir: Path, fingerprint: str) -> str | None:
    """The newest complete checkpoint made with ``fingerprint``; stale or half-written ones are deleted."""
    if not ckpt_dir.is_dir():
        return None
    fp_file = ckpt_dir / _FINGERPRINT
    recorded = json.loads(fp_file.read_text(encoding="utf-8")).get("key") if fp_file.is_file() else None
    if recorded != fingerprint:
        logger.warning("discarding checkpoints in %s: they were made with other data or settings", ckpt_dir)
        shutil.rmtree(ckpt_dir)
        return None
    complete = []
    for d in ckpt_dir.glob("checkpoint-*"):
        if (d / "trainer_state.json").is_file() and d.name.split("-")[-1].isdigit():
            complete.append((int(d.name.split("-")[-1]), d))
        else:
            shutil.rmtree(d, ignore_errors=True)  # killed while saving
    return str(max(complete)[1]) if complete else None


@contextlib.contextmanager
def _hf_bars_off() -> Iterator[None]:
    """Silence transformers' own bars (loading / writing shards): they would interleave with ours."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def _ir_evaluator(val: BeirDataset, batch_size: int):
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    relevant = {q: {d for d, s in docs.items() if s > 0} for q, docs in val.qrels.items()}
    relevant = {q: ds for q, ds in relevant.items() if ds and q in val.queries}
    return InformationRetrievalEvaluator(
        queries={q: val.queries[q] for q in relevant}, corpus={d: passage_text(doc) for d, doc in val.corpus.items()},
        relevant_docs=relevant, name="val", batch_size=batch_size, write_csv=False, show_progress_bar=False,
        mrr_at_k=[10], ndcg_at_k=[10], accuracy_at_k=[1, 10], precision_recall_at_k=[10], map_at_k=[100])


def train_embedding(train: Any, config: EmbeddingTrainConfig | None = None, output_dir: str | Path = "embedding",
                    val: BeirDataset | None = None, *, save_steps: int | None = None,
                    save_every_s: float | None = 300.0, device: str | None = None) -> TrainResult:
    """Fine-tune ``config.base`` on ``train`` (a BeirDataset or ``(corpus, queries, qrels[, metadata])``).

    Checkpoints go to ``output_dir/checkpoints`` every ``save_steps`` steps and/or every ``save_every_s``
    seconds; a rerun with the same data and config resumes from the newest one. With ``val``, nDCG@10 etc. are
    measured on it (sentence-transformers' InformationRetrievalEvaluator) once per epoch, or 4 times in all
    when training is shorter than an epoch.
    """
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from ragtune.models import load_sentence_transformer, resolve_model

    config = config or EmbeddingTrainConfig()
    out = Path(output_dir)
    t0 = time.perf_counter()
    pairs = build_pairs(*_as_training_data(train), seed=config.seed)
    keys = [p.positive_id for p in pairs]
    if len(set(keys)) < 2:
        raise DataFormatError(f"the training set has {len(pairs)} usable (query, positive) pairs over "
                              f"{len(set(keys))} distinct chunks; in-batch-negative training needs at least 2. "
                              "Check that the qrels point at chunks of the corpus, or generate more queries "
                              "(ragtune generate --per-chunk N).")
    batch_size = min(config.batch_size, len(set(keys)))
    if batch_size < config.batch_size:
        logger.warning("batch_size %d is larger than the %d distinct positive chunks; using %d",
                       config.batch_size, len(set(keys)), batch_size)
    sampler_factory = partial(NoSharedPositiveBatchSampler, keys=keys)
    steps_per_epoch = len(sampler_factory(keys, batch_size=batch_size, drop_last=False, seed=config.seed))
    total = config.max_steps or max(1, math.ceil(config.epochs * steps_per_epoch))
    fingerprint = config_key({"config": config.model_dump(mode="json"), "base": resolve_model(config.base),
                              "pairs": text_sha1(json.dumps([asdict(p) for p in pairs]))})
    ckpt_dir = out / "checkpoints"
    resume = _latest_checkpoint(ckpt_dir, fingerprint)
    atomic_write_json(ckpt_dir / _FINGERPRINT, {"key": fingerprint})

    cuda = torch.cuda.is_available() and device != "cpu"
    with _hf_bars_off():
        model = load_sentence_transformer(config.base, device=device or ("cuda" if cuda else "cpu"))
    model.max_seq_length = config.max_seq_length
    dataset = Dataset.from_dict({"anchor": [p.query for p in pairs], "positive": [p.positive for p in pairs]})
    eval_steps = min(steps_per_epoch, total) if total >= steps_per_epoch else max(1, total // 4)
    show = logging.getLogger("ragtune").getEffectiveLevel() <= logging.INFO
    args = SentenceTransformerTrainingArguments(
        output_dir=str(ckpt_dir), num_train_epochs=config.epochs, max_steps=config.max_steps or -1,
        per_device_train_batch_size=batch_size, learning_rate=config.learning_rate,
        warmup_steps=math.ceil(total * config.warmup_ratio), seed=config.seed, data_seed=config.seed,
        batch_sampler=sampler_factory, logging_steps=max(1, min(10, total // 10)), save_strategy="no",
        save_total_limit=1, eval_strategy="steps" if val is not None else "no", eval_steps=eval_steps,
        per_device_eval_batch_size=batch_size, report_to="none", disable_tqdm=True, use_cpu=not cuda,
        bf16=cuda and torch.cuda.is_bf16_supported(), fp16=cuda and not torch.cuda.is_bf16_supported(),
        dataloader_drop_last=False)
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=dataset, loss=MultipleNegativesRankingLoss(model, scale=config.scale),
        evaluator=_ir_evaluator(val, batch_size) if val is not None else None,
        callbacks=[_Progress(save_steps, save_every_s, show, eval_at_end=val is not None)])
    for cb in (PrinterCallback, ProgressCallback):  # both print the raw log dicts to stdout
        trainer.remove_callback(cb)
    resumed_step = int(Path(resume).name.split("-")[-1]) if resume else None
    if resume:
        logger.info("resuming fine-tuning from %s (step %d of %d)", resume, resumed_step, total)
    logger.info("fine-tuning %s on %d pairs: batch %d, %d steps", config.base, len(pairs), batch_size, total)
    with _hf_bars_off():
        trainer.train(resume_from_checkpoint=resume)
        with atomic_dir(out / "model") as tmp:
            model.save(str(tmp))
    history = trainer.state.log_history
    losses = [{"step": h["step"], "loss": h["loss"], "learning_rate": h.get("learning_rate")}
              for h in history if "loss" in h]
    evals = [{k: v for k, v in h.items() if k == "step" or k.startswith("eval_val_")}
             for h in history if any(k.startswith("eval_val_") for k in h)]
    result = TrainResult(out / "model", out / "train-log.json", trainer.state.global_step, len(pairs), batch_size,
                         round(time.perf_counter() - t0, 2), resumed_step,
                         losses[-1]["loss"] if losses else None, losses, evals)
    atomic_write_json(result.log_path, {**result.to_dict(), "base": config.base, "steps_per_epoch": steps_per_epoch,
                                        "config": config.model_dump(mode="json")})
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    logger.info("fine-tuned model written to %s (%d steps, %.0f s)", result.model_dir, result.steps, result.seconds)
    return result
