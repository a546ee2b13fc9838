"""The trainer callback that both ragtune trainers (embedding, reranker) share: progress, timed checkpoints, budget.

``TrainProgress`` draws one tqdm bar on stderr (ragtune's trainers show it only when ragtune logs at INFO or below,
so ``--quiet`` runs stay silent) with the running loss and, if named, the last validation score. It can also ask the trainer for a
checkpoint every ``save_steps`` steps or ``save_every_s`` seconds (never at the last step: the final model is
written separately), stop training once ``max_seconds`` have passed, and evaluate at the final step. Decisions
taken from a local clock go through :func:`ragtune.train.distributed.any_process`, so every DDP rank takes them at
the same step.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from transformers import TrainerCallback

from ragtune.train.distributed import any_process

logger = logging.getLogger(__name__)

__all__ = ["TrainProgress"]


class TrainProgress(TrainerCallback):
    """Progress bar, timed/stepped checkpoint requests and a wall-clock budget for a transformers ``Trainer``.

    Args:
        desc: the bar's label (also names the run in the budget warning).
        show: draw the bar (false: nothing is printed; checkpoints and the budget still apply).
        save_steps: ask for a checkpoint every this many steps.
        save_every_s: ask for a checkpoint once this many seconds have passed since the last one.
        max_seconds: stop training once this many seconds have passed since the callback was made;
            ``stopped_at`` then holds the step.
        validate_on_stop: when the budget stops training, evaluate and save the last weights first, so a
            best-checkpoint choice sees them.
        eval_at_end: evaluate at the final step (for a trainer that evaluates every N steps, where the last step
            is rarely a multiple of N).
        metric: the log key of a validation score to show next to the loss.
    """

    def __init__(self, desc: str, *, show: bool, save_steps: int | None = None, save_every_s: float | None = None,
                 max_seconds: float | None = None, validate_on_stop: bool = False, eval_at_end: bool = False,
                 metric: str | None = None) -> None:
        self.desc, self.show = desc, show
        self.save_steps, self.save_every_s, self.max_seconds = save_steps, save_every_s, max_seconds
        self.validate_on_stop, self.eval_at_end, self.metric = validate_on_stop, eval_at_end, metric
        self.bar: Any = None
        self.started = self.last_save = time.monotonic()
        self.stopped_at: int | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        from tqdm.auto import tqdm

        self.last_save = time.monotonic()
        self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc=self.desc, unit="step",
                        file=sys.stderr, disable=not self.show, dynamic_ncols=True)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)
        if state.global_step >= state.max_steps:
            control.should_evaluate = control.should_evaluate or self.eval_at_end
            return
        if self.max_seconds and any_process(time.monotonic() - self.started >= self.max_seconds):
            self.stopped_at = state.global_step
            control.should_training_stop = True
            control.should_evaluate = control.should_save = self.validate_on_stop
            logger.warning("%s: time budget of %.0f s reached at step %d of %d; training stops here", self.desc,
                           self.max_seconds, state.global_step, state.max_steps)
        due_steps = self.save_steps is not None and state.global_step % self.save_steps == 0
        due_time = self.save_every_s is not None and any_process(
            time.monotonic() - self.last_save >= self.save_every_s)
        if due_steps or due_time:
            control.should_save = True

    def on_save(self, args, state, control, **kwargs):
        self.last_save = time.monotonic()

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if self.bar is not None:
            if "loss" in logs:
                self.bar.set_postfix(loss=f"{logs['loss']:.4f}")
            elif self.metric and self.metric in logs:
                self.bar.set_postfix(**{self.metric.removeprefix("eval_"): f"{logs[self.metric]:.4f}"})
        logger.debug("step %d: %s", state.global_step, logs)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
