"""Fine-tune a sentence-transformers bi-encoder on (query, positive chunk) pairs.

``train_embedding(train_set, EmbeddingTrainConfig, output_dir, val=...)`` trains with the loss named by
``config.loss`` (:data:`LOSSES`: ``mnrl``, ``cached-mnrl``, ``margin-mse``, ``kl``; optionally inside MatryoshkaLoss),
with in-batch negatives plus ``config.negatives`` hard negatives per query mined by :mod:`ragtune.mining`, and
writes::

    output_dir/model/                 a plain sentence-transformers directory (the best on ``val``, if given,
                                      or the last step under the small-set schedule, :func:`training_schedule`)
    output_dir/train-log.json         losses, every evaluation, best step, early stop, mining statistics, config
    output_dir/mined-negatives.json   the mined negatives (reused by a rerun with the same data and settings)
    output_dir/teacher-scores.sqlite  cached teacher scores (distillation losses / teacher guard)
    output_dir/checkpoints/           trainer checkpoints and the best model so far; removed after success

Calling it again into the same ``output_dir`` after an interruption resumes from the last complete checkpoint,
provided the data and configuration are unchanged (a fingerprint guards this). Pairs come from
:mod:`ragtune.train.pairs`, losses from :mod:`ragtune.train.losses`, batches from :mod:`ragtune.train.sampler`,
validation and the best checkpoint from :mod:`ragtune.train.validation`, epochs and learning rate (the small-set
schedule) from :mod:`ragtune.train.schedule`, frozen layers and per-layer learning rates from
:mod:`ragtune.train.layers`, LoRA adapters from :mod:`ragtune.train.lora`; this module holds the mining and teacher
glue and the trainer.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from ragtune._io import atomic_dir, atomic_write_json, text_sha1
from ragtune.config import RECIPE_FREEZE, EmbeddingTrainConfig
from ragtune.data.beir import BeirDataset
from ragtune.errors import ConfigError, DataFormatError
from ragtune.train.checkpoints import FINGERPRINT_FILE, latest_checkpoint, split_history
from ragtune.train.distributed import (  # DDP: rank-0-only side effects
    SyncSamplerEpoch,
    barrier,
    init_process_group,
    is_main_process,
    world_size,
)
from ragtune.train.layers import freeze_modules, freeze_upper_layers, layer_learning_rates
from ragtune.train.lora import add_lora, lora_trainer_class, save_plain
from ragtune.train.losses import DISTIL, LOSSES, build_loss, loss_name
from ragtune.train.pairs import Pair, build_pairs, load_pairs, passage_text, training_pairs
from ragtune.train.progress import TrainProgress
from ragtune.train.sampler import NoSharedPositiveBatchSampler
from ragtune.train.schedule import TrainSchedule, training_schedule
from ragtune.train.validation import BestKeeper, trainer_evaluator
from ragtune.workspace import config_key

logger = logging.getLogger(__name__)

__all__ = ["LOSSES", "NoSharedPositiveBatchSampler", "Pair", "TrainResult", "TrainSchedule", "build_loss",
           "build_pairs", "load_pairs", "passage_text", "train_embedding", "training_schedule"]


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
    loss: str = "MultipleNegativesRankingLoss"
    negatives: int = 0
    mining: dict | None = None  # mining statistics (ragtune.mining.MinedNegatives.stats)
    best_step: int | None = None  # step of the written model when validation chose it (best val nDCG@10)
    best_metric: float | None = None
    stopped_early: bool = False
    schedule: dict | None = None  # the TrainSchedule trained (epochs, learning rate, which model was written)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["model_dir"], d["log_path"] = str(self.model_dir), str(self.log_path)
        return d


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


# --- negatives and teacher labels ------------------------------------------------------------------------------


def _mining_settings(config: EmbeddingTrainConfig) -> dict[str, Any]:
    keys = ("negatives", "mine_with", "mine_range_min", "mine_range_max", "mine_sampling", "absolute_margin",
            "relative_margin", "teacher", "teacher_max_length", "teacher_margin", "teacher_candidates", "seed")
    return {k: v for k, v in config.model_dump(mode="json").items() if k in keys}


def _texts_sha1(texts: dict[str, str]) -> str:
    import hashlib

    h = hashlib.sha1()
    for k, v in texts.items():
        h.update(k.encode("utf-8", "surrogatepass") + b"\0" + v.encode("utf-8", "surrogatepass") + b"\1")
    return h.hexdigest()


def _mine(pairs: list[Pair], texts: dict[str, str], known: dict[str, set[str]], config: EmbeddingTrainConfig,
          model: Any, out: Path, scorer: Any, batch_size: int) -> Any:
    """Hard negatives per query id (a :class:`~ragtune.mining.MinedNegatives`), cached in
    ``out/mined-negatives.json`` so a resumed run trains on exactly the same ones. Under DDP rank 0 mines."""
    from ragtune.mining import MinedNegatives, mine_negatives

    path = out / "mined-negatives.json"
    key = config_key({"mining": _mining_settings(config), "base": _resolved_base(config),
                      "pairs": text_sha1(json.dumps([asdict(p) for p in pairs])), "corpus": _texts_sha1(texts)})

    def cached() -> MinedNegatives | None:
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("key") == key:
                return MinedNegatives.from_dict(data["result"])
        return None

    if is_main_process():
        mined = cached()
        if mined is not None:
            logger.info("using the hard negatives mined earlier (%s)", path)
        else:
            logger.info("mining %d hard negatives per query with %s", config.negatives, config.mine_with)
            mined = mine_negatives(
                pairs, texts, num_negatives=config.negatives, method=config.mine_with, model=model,
                known_positives=known, range_min=config.mine_range_min, range_max=config.mine_range_max,
                absolute_margin=config.absolute_margin, relative_margin=config.relative_margin, teacher=scorer,
                teacher_margin=config.teacher_margin, teacher_candidates=config.teacher_candidates,
                sampling=config.mine_sampling, pad_with_dropped=True, seed=config.seed,
                batch_size=max(batch_size, 128))  # every row needs `negatives` texts
            atomic_write_json(path, {"key": key, "result": mined.to_dict()})
    barrier()
    if not is_main_process():
        mined = cached()
    return mined


def _resolved_base(config: EmbeddingTrainConfig) -> str:
    from ragtune.models import resolve_model

    return resolve_model(config.base)


def _teacher_scorer(config: EmbeddingTrainConfig, out: Path, cuda: bool) -> Any:
    from ragtune.teacher import TeacherScorer, resolve_teacher, teacher_name

    if config.teacher is None:
        return None
    teacher = resolve_teacher(config.teacher, max_length=config.teacher_max_length,
                              device="cuda" if cuda else "cpu")
    name = config.teacher if isinstance(config.teacher, str) else teacher_name(teacher)
    return TeacherScorer(teacher, name=name, cache_path=out / "teacher-scores.sqlite",
                         batch_size=config.teacher_batch_size, max_length=config.teacher_max_length)


def _teacher_labels(scorer: Any, pairs: list[Pair], negatives: list[list[str]]) -> list[list[float]]:
    """Teacher scores ``[t(q, positive), t(q, neg_1), ...]`` per row; under DDP rank 0 scores (and fills the
    cache) first, then the others read the cache."""
    flat = [(p.query, text) for p, negs in zip(pairs, negatives, strict=True) for text in [p.positive, *negs]]
    if is_main_process():
        scores = scorer.score(flat, desc="teacher scoring training pairs")
    barrier()
    if not is_main_process():
        scores = scorer.score(flat, desc="teacher scoring training pairs")
    width = 1 + len(negatives[0])
    return [scores[i:i + width] for i in range(0, len(scores), width)]


def _checkpointing_args(config: EmbeddingTrainConfig) -> dict[str, Any]:
    """Training arguments for activation (gradient) checkpointing, under the name this transformers uses."""
    from sentence_transformers import SentenceTransformerTrainingArguments

    if not config.gradient_checkpointing:
        return {}
    fields = SentenceTransformerTrainingArguments.__dataclass_fields__
    name = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    # not reentrant: the reentrant variant drops the gradients when a layer's input does not require grad (LoRA)
    return {name: True, f"{name}_kwargs": {"use_reentrant": False}}


def train_embedding(train: Any, config: EmbeddingTrainConfig | None = None, output_dir: str | Path = "embedding",
                    val: BeirDataset | None = None, *, monitor: Mapping[str, BeirDataset] | None = None,
                    save_steps: int | None = None, save_every_s: float | None = 300.0,
                    device: str | None = None) -> TrainResult:
    """Fine-tune ``config.base`` on ``train`` and write ``output_dir/model``.

    ``train`` is a BeirDataset, ``(corpus, queries, qrels[, metadata])``, a list of :class:`Pair` (e.g. from
    :func:`load_pairs`) or the path of a pairs ``.jsonl`` file. ``config.loss`` picks the loss from
    :data:`LOSSES`; with ``config.negatives > 0`` hard negatives are mined first (:mod:`ragtune.mining`, cached in
    ``output_dir/mined-negatives.json``), and the distillation losses get teacher scores (cached in
    ``output_dir/teacher-scores.sqlite``).

    Checkpoints go to ``output_dir/checkpoints`` every ``save_steps`` steps and/or every ``save_every_s``
    seconds; a rerun with the same data and config resumes from the newest one. With ``val``, nDCG@10 etc. are
    measured ``config.evals_per_epoch`` times per epoch (and at the end); the best model is the one written, and
    training stops after ``config.patience`` evaluations without improvement. A small set under the default epochs
    and learning rate trains longer at half the rate instead (:func:`training_schedule`): validation then runs once
    per epoch, only to be logged, and the last step is written.

    ``monitor`` names more retrieval sets (e.g. the general check set of :func:`ragtune.data.checkset.load_checkset`)
    scored at every evaluation and logged in ``train-log.json`` (``evals``: ``eval_monitor_NAME_cosine_ndcg@10``
    and the like), to watch what training does to them; they never pick the checkpoint.
    """
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from ragtune.models import load_sentence_transformer, set_max_seq_length

    config = config or EmbeddingTrainConfig()
    out = Path(output_dir)
    monitor = dict(monitor or {})
    for name, ds in monitor.items():
        if not isinstance(name, str) or not name.strip() or any(c.isspace() or c == "/" for c in name):
            raise ConfigError(f"monitor name {name!r}: use a short name without spaces or '/', e.g. 'general'")
        if not isinstance(ds, BeirDataset) or not ds.qrels:
            raise ConfigError(f"monitor set {name!r} is not a BEIR dataset with judged queries; load it with "
                              "ragtune.data.beir.load_beir(DIR) (or load_checkset('en'))")
    evaluating = val is not None or bool(monitor)
    t0 = time.perf_counter()
    pairs, texts, known = training_pairs(train, config.seed)
    keys = [p.positive_id for p in pairs]
    n_ranks = world_size()  # DDP: batch_size is per process; one step takes a batch on each
    if len(set(keys)) < 2 * n_ranks:
        raise DataFormatError(f"the training set has {len(pairs)} usable (query, positive) pairs over "
                              f"{len(set(keys))} distinct chunks; in-batch-negative training needs at least "
                              f"{2 * n_ranks}{f' (2 for each of {n_ranks} processes)' if n_ranks > 1 else ''}. "
                              "Check that the qrels point at chunks of the corpus, or generate more queries "
                              "(ragtune generate --per-chunk N).")
    if config.negatives == 0 and any(p.negatives for p in pairs):
        logger.warning("the pairs come with negatives, but negatives=0: they are not used (set negatives / "
                       "--negatives N to train with N negatives per query)")
    batch_size = min(config.batch_size, len(set(keys)) // n_ranks)
    if batch_size < config.batch_size:
        logger.warning("batch_size %d is larger than the %d distinct positive chunks; using %d",
                       config.batch_size, len(set(keys)), batch_size)
    cuda = torch.cuda.is_available() and device != "cpu"
    init_process_group(cpu=not cuda)  # DDP: rank 0 tidies and stamps the checkpoints, then the others look
    with _hf_bars_off():
        model = load_sentence_transformer(config.base, device=device or ("cuda" if cuda else "cpu"))
    set_max_seq_length(model, config.max_seq_length, "max_seq_length", config.base)
    scorer = _teacher_scorer(config, out, cuda)
    mined = None
    negatives: list[list[str]] = [[] for _ in pairs]
    neg_keys: list[list[str]] | None = None
    columns: dict[str, list] = {"anchor": [p.query for p in pairs], "positive": [p.positive for p in pairs]}
    if config.negatives > 0:
        mined = _mine(pairs, texts, known, config, model, out, scorer, batch_size)
        rows = [mined.negatives.get(p.query_id, []) for p in pairs]
        if any(len(r) < config.negatives for r in rows):  # only a tiny corpus has too few passages to pad with
            raise DataFormatError(f"could not find {config.negatives} negatives for every query: the corpus has "
                                  f"only {len(texts)} passages; lower negatives (--negatives)")
        negatives = [[n.text for n in r[:config.negatives]] for r in rows]
        neg_keys = [[n.doc_id for n in r[:config.negatives]] for r in rows]
        for i in range(config.negatives):
            columns[f"negative_{i + 1}"] = [negs[i] for negs in negatives]
    if config.loss in DISTIL:
        labels = _teacher_labels(scorer, pairs, negatives)
        if config.loss == "margin-mse":  # teacher margins brought to the student's cosine range (MNRL's scale)
            labels = [[s / (config.teacher_temperature * config.scale) for s in row] for row in labels]
        columns["label"] = labels
    if scorer is not None:
        scorer.close()
    sampler_factory = partial(NoSharedPositiveBatchSampler, keys=keys, num_replicas=n_ranks, negative_keys=neg_keys)
    # DDP: sentence-transformers forces drop_last, and each rank takes every n_ranks-th batch
    steps_per_epoch = len(sampler_factory(keys, batch_size=batch_size, drop_last=n_ranks > 1,
                                          seed=config.seed)) // n_ranks
    schedule = training_schedule(config, steps_per_epoch)
    if schedule.small_set:
        logger.info("a small training set (%d steps an epoch): %g epochs at learning rate %g, and the last step is "
                    "written (validation is logged, it does not choose; small_set_steps: 0 turns this off)",
                    steps_per_epoch, schedule.epochs, schedule.learning_rate)
    total = config.max_steps or max(1, math.ceil(schedule.epochs * steps_per_epoch))
    fingerprint = config_key({"config": config.model_dump(mode="json"), "base": _resolved_base(config),
                              "pairs": text_sha1(json.dumps([asdict(p) for p in pairs])),
                              "negatives": text_sha1(json.dumps(neg_keys)),
                              "labels": text_sha1(json.dumps(columns.get("label")))})
    ckpt_dir = out / "checkpoints"
    best_dir = ckpt_dir / "best-model"
    if is_main_process():
        resume = latest_checkpoint(ckpt_dir, fingerprint)
        if resume is None:
            shutil.rmtree(best_dir, ignore_errors=True)  # from a run killed before its first checkpoint
        atomic_write_json(ckpt_dir / FINGERPRINT_FILE, {"key": fingerprint})
    barrier()
    if not is_main_process():
        resume = latest_checkpoint(ckpt_dir, fingerprint)
    if config.lora_rank is not None:  # after mining, which used the plain base; seeded: the A matrices are random
        from transformers import set_seed

        set_seed(config.seed)
        trainable = add_lora(model, config.lora_rank, config.lora_alpha, config.lora_dropout, config.lora_targets)
        logger.info("LoRA rank %d: %d trainable parameters; the encoder's own weights are frozen", config.lora_rank,
                    trainable)
    if config.freeze_upper_layers:
        frozen = freeze_upper_layers(model, config.freeze_upper_layers)
        logger.info("the top %d layers stay as the base has them (%d tensors frozen)", config.freeze_upper_layers,
                    frozen)
    if config.freeze_modules:  # the default recipe's spec must not stop a model ragtune cannot sort into sub-layers
        frozen = freeze_modules(model, config.freeze_modules, strict=config.freeze_modules != list(RECIPE_FREEZE))
        logger.info("%s stay as the base has them (%d tensors frozen)", ", ".join(config.freeze_modules), frozen)
    rates = (layer_learning_rates(model, schedule.learning_rate, config.layer_lr_decay)
             if config.layer_lr_decay < 1 else {})
    if rates and "learning_rate_mapping" not in SentenceTransformerTrainingArguments.__dataclass_fields__:
        raise ConfigError("layer_lr_decay needs a sentence-transformers with learning_rate_mapping: "
                          "pip install -U sentence-transformers (or set layer_lr_decay: 1)")
    dataset = Dataset.from_dict(columns)
    span = min(steps_per_epoch, total)
    eval_steps = max(1, span // (1 if schedule.keep == "last" else config.evals_per_epoch))  # last: only logged
    show = logging.getLogger("ragtune").getEffectiveLevel() <= logging.INFO and is_main_process()
    args = SentenceTransformerTrainingArguments(
        output_dir=str(ckpt_dir), num_train_epochs=schedule.epochs, max_steps=config.max_steps or -1,
        per_device_train_batch_size=batch_size, learning_rate=schedule.learning_rate,
        warmup_steps=math.ceil(total * config.warmup_ratio), seed=config.seed, data_seed=config.seed,
        batch_sampler=sampler_factory, logging_steps=max(1, min(10, total // 10)), save_strategy="no",
        save_total_limit=1, eval_strategy="steps" if evaluating else "no", eval_steps=eval_steps,
        per_device_eval_batch_size=batch_size, report_to="none", disable_tqdm=True, use_cpu=not cuda,
        bf16=cuda and torch.cuda.is_bf16_supported(), fp16=cuda and not torch.cuda.is_bf16_supported(),
        dataloader_drop_last=n_ranks > 1,  # DDP: sentence-transformers would force it with a warning
        **({"learning_rate_mapping": rates} if rates else {}), **_checkpointing_args(config))
    keeper = BestKeeper(best_dir, config.patience, choose=schedule.keep == "best") if val is not None else None
    loss = build_loss(model, config)
    trainer = (lora_trainer_class() if config.lora_rank is not None else SentenceTransformerTrainer)(
        model=model, args=args, train_dataset=dataset, loss=loss,
        evaluator=trainer_evaluator(val, monitor, max(batch_size, 128)) if evaluating else None,  # batch: encoding only
        callbacks=[TrainProgress("fine-tuning", show=show, save_steps=save_steps, save_every_s=save_every_s,
                                 eval_at_end=evaluating), SyncSamplerEpoch(),
                   *([keeper] if keeper is not None else [])])
    for cb in (PrinterCallback, ProgressCallback):  # both print the raw log dicts to stdout
        trainer.remove_callback(cb)
    resumed_step = int(Path(resume).name.split("-")[-1]) if resume else None
    if resume:
        logger.info("resuming fine-tuning from %s (step %d of %d)", resume, resumed_step, total)
    logger.info("fine-tuning %s on %d pairs with %s: batch %d, %d negatives per query, %d steps", config.base,
                len(pairs), loss_name(loss), batch_size, config.negatives, total)
    with _hf_bars_off():
        trainer.train(resume_from_checkpoint=resume)
        if is_main_process():  # DDP: the weights are the same on every rank; rank 0 writes them
            if keeper is not None and (best_dir / "best.json").is_file():
                (best_dir / "best.json").unlink()  # the best evaluation is recorded in train-log.json
                if (out / "model").exists():
                    shutil.rmtree(out / "model")
                os.replace(best_dir, out / "model")
            else:
                with atomic_dir(out / "model") as tmp:
                    save_plain(model, tmp)
    losses, evals = split_history(trainer.state.log_history)
    result = TrainResult(out / "model", out / "train-log.json", trainer.state.global_step, len(pairs), batch_size,
                         round(time.perf_counter() - t0, 2), resumed_step,
                         losses[-1]["loss"] if losses else None, losses, evals, loss=loss_name(loss),
                         negatives=config.negatives, mining=mined.stats if mined is not None else None,
                         best_step=keeper.best_step if keeper and keeper.choose else None,
                         best_metric=keeper.best_metric if keeper and keeper.choose else None,
                         stopped_early=bool(keeper and keeper.stopped_early), schedule=asdict(schedule))
    if is_main_process():  # DDP: rank 0 writes the log and removes the checkpoints; the others wait for it
        atomic_write_json(result.log_path, {**result.to_dict(), "base": config.base, "processes": n_ranks,
                                            "steps_per_epoch": steps_per_epoch, "eval_steps": eval_steps,
                                            "config": config.model_dump(mode="json")})
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    barrier()
    logger.info("fine-tuned model written to %s (%d steps, %.0f s%s)", result.model_dir, result.steps,
                result.seconds, f"; best validation nDCG@10 {result.best_metric:.4f} at step {result.best_step}"
                if result.best_metric is not None else "; the last step" if keeper is not None else "")
    return result
