"""Resumable training: the newest usable checkpoint of a trainer's output folder, guarded by a fingerprint.

Both trainers (embedding, reranker) stamp their checkpoint folder with a fingerprint of data and settings; a rerun
resumes only from checkpoints made with the same fingerprint, so changed data never continues an old run.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

logger = logging.getLogger(__name__)

FINGERPRINT_FILE = "ragtune-fingerprint.json"


def latest_checkpoint(ckpt_dir: Path, fingerprint: str) -> str | None:
    """The newest complete checkpoint made with ``fingerprint``; stale or half-written ones are deleted."""
    if not ckpt_dir.is_dir():
        return None
    fp_file = ckpt_dir / FINGERPRINT_FILE
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


LOSS_PARTS = ("ranking", "anchor")  # the parts train.anchor.AnchoredLoss returns, logged by the trainer


def split_history(history: list[dict]) -> tuple[list[dict], list[dict]]:
    """A trainer's ``state.log_history`` as training losses (step, loss, learning rate, and the parts of a loss
    that returns several, e.g. ``ranking`` and ``anchor``) and evaluation entries (step and every ``eval_val_*``
    and ``eval_monitor_*`` metric), in step order."""
    losses = [{"step": h["step"], "loss": h["loss"], "learning_rate": h.get("learning_rate"),
               **{k: h[k] for k in LOSS_PARTS if k in h}} for h in history if "loss" in h]
    prefixes = ("eval_val_", "eval_monitor_")
    evals = [{k: v for k, v in h.items() if k == "step" or k.startswith(prefixes)}
             for h in history if any(k.startswith(prefixes) for k in h)]
    return losses, evals
