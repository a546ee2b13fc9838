"""Validation during embedding training: the trainer's evaluator (the validation set, which picks the checkpoint,
and the monitored sets, which are only logged) and the callback that keeps the best checkpoint and stops early."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from ragtune._io import atomic_dir, atomic_write_json
from ragtune.data.beir import BeirDataset
from ragtune.train.distributed import is_main_process
from ragtune.train.lora import save_plain
from ragtune.train.pairs import passage_text

logger = logging.getLogger(__name__)

__all__ = ["BestKeeper", "ir_evaluator", "ndcg_key", "trainer_evaluator"]


def ir_evaluator(val: BeirDataset, batch_size: int, name: str = "val"):
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    relevant = {q: {d for d, s in docs.items() if s > 0} for q, docs in val.qrels.items()}
    relevant = {q: ds for q, ds in relevant.items() if ds and q in val.queries}
    return InformationRetrievalEvaluator(
        queries={q: val.queries[q] for q in relevant}, corpus={d: passage_text(doc) for d, doc in val.corpus.items()},
        relevant_docs=relevant, name=name, batch_size=batch_size, write_csv=False, show_progress_bar=False,
        mrr_at_k=[10], ndcg_at_k=[10], accuracy_at_k=[1, 10], precision_recall_at_k=[10], map_at_k=[100])


def trainer_evaluator(val: BeirDataset | None, monitor: Mapping[str, BeirDataset], batch_size: int):
    """The trainer's evaluator: ``val`` as ``val`` (it picks the checkpoint) and each monitored set as
    ``monitor_NAME`` (logged only). Sets that share one corpus object encode it once per evaluation."""
    from sentence_transformers.sentence_transformer.evaluation import SequentialEvaluator

    named = ([("val", val)] if val is not None else []) + [(f"monitor_{n}", ds) for n, ds in monitor.items()]
    evaluators = [ir_evaluator(ds, batch_size, name) for name, ds in named]
    if len(evaluators) == 1:
        return evaluators[0]
    corpus_keys = [id(ds.corpus) for _, ds in named]

    class SharedCorpusEvaluator(SequentialEvaluator):
        def __call__(self, model, output_path=None, epoch=-1, steps=-1):
            encoded: dict[int, Any] = {}
            results: dict[str, float] = {}
            for ev, key in zip(self.evaluators, corpus_keys, strict=True):
                if key not in encoded:
                    encoded[key] = ev.embed_inputs(model, ev.corpus, encode_fn_name="document",
                                                   prompt_name=ev.corpus_prompt_name, prompt=ev.corpus_prompt)
                results.update(ev(model, output_path, epoch, steps, corpus_embeddings=encoded[key]))
            self.primary_metric = self.evaluators[0].primary_metric
            return results

    return SharedCorpusEvaluator(evaluators)


def ndcg_key(metrics: dict[str, Any]) -> str | None:
    keys = sorted(k for k in metrics if k.startswith("eval_val_") and k.endswith("ndcg@10"))
    return next((k for k in keys if "cosine" in k), keys[0] if keys else None)


class BestKeeper(TrainerCallback):
    """Keeps the model with the best validation nDCG@10 in ``best_dir`` and stops training after ``patience``
    evaluations without improvement. After a resume its state is rebuilt from the restored log history. With
    ``choose=False`` it only logs each evaluation against the best so far: nothing is saved, training never stops
    early, and the last step is the model written."""

    def __init__(self, best_dir: Path, patience: int | None, *, choose: bool = True) -> None:
        self.best_dir, self.patience, self.choose = best_dir, patience, choose
        self.best_metric: float | None = None
        self.best_step: int | None = None
        self.since_best = 0
        self.stopped_early = False

    def _update(self, step: int, value: float) -> bool:
        if self.best_metric is None or value > self.best_metric:
            self.best_metric, self.best_step, self.since_best = value, step, 0
            return True
        self.since_best += 1
        return False

    def on_train_begin(self, args, state, control, **kwargs):
        for h in state.log_history:  # a resumed run: replay the evaluations made before the checkpoint
            key = ndcg_key(h)
            if key is not None:
                self._update(int(h["step"]), float(h[key]))
        info = self.best_dir / "best.json"
        if info.is_file():  # saved after the checkpoint, by the interrupted run
            saved = json.loads(info.read_text(encoding="utf-8"))
            if self.best_metric is None or saved["metric"] > self.best_metric:
                self.best_metric, self.best_step = saved["metric"], saved["step"]

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        key = ndcg_key(metrics or {})
        if key is None:
            return
        value = float(metrics[key])
        if self._update(state.global_step, value):
            if self.choose and is_main_process() and model is not None:
                with atomic_dir(self.best_dir) as tmp:
                    save_plain(model, tmp)  # LoRA adapters merged: the best model is a plain one
                    atomic_write_json(tmp / "best.json", {"step": state.global_step, "metric": value, "key": key})
            logger.info("validation nDCG@10 %.4f at step %d (best so far)", value, state.global_step)
        else:
            logger.info("validation nDCG@10 %.4f at step %d (best %.4f at step %s; %d without improvement)", value,
                        state.global_step, self.best_metric, self.best_step, self.since_best)
            if (self.choose and self.patience is not None and self.since_best >= self.patience
                    and state.global_step < state.max_steps):
                logger.info("early stopping: no better validation nDCG@10 in %d evaluations", self.since_best)
                self.stopped_early = True
                control.should_training_stop = True
