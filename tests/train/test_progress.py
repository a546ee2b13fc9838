"""TrainProgress: checkpoint requests, the time budget and the last-step evaluation, driven by hand."""

from __future__ import annotations

import time

from transformers import TrainerControl, TrainerState

from ragtune.train.progress import TrainProgress


def _step(cb: TrainProgress, step: int, max_steps: int = 10) -> TrainerControl:
    state, control = TrainerState(global_step=step, max_steps=max_steps), TrainerControl()
    cb.on_step_end(None, state, control)
    return control


def test_saves_every_n_steps_but_never_at_the_last_step():
    cb = TrainProgress("t", show=False, save_steps=5)
    assert [s for s in range(1, 11) if _step(cb, s).should_save] == [5]


def test_a_timed_checkpoint_is_asked_for_once_the_interval_has_passed():
    cb = TrainProgress("t", show=False, save_every_s=60)
    assert not _step(cb, 1).should_save
    cb.last_save -= 61
    assert _step(cb, 2).should_save
    cb.on_save(None, None, None)
    assert not _step(cb, 3).should_save


def test_the_budget_stops_training_and_validates_the_last_weights_if_asked(caplog):
    for validate in (True, False):
        cb = TrainProgress("t", show=False, max_seconds=30, validate_on_stop=validate)
        assert not _step(cb, 1).should_training_stop
        cb.started = time.monotonic() - 31
        control = _step(cb, 4)
        assert control.should_training_stop and cb.stopped_at == 4
        assert control.should_evaluate is validate and control.should_save is validate
    assert "time budget of 30 s reached at step 4 of 10" in caplog.text


def test_evaluates_at_the_last_step_only_when_asked():
    assert _step(TrainProgress("t", show=False, eval_at_end=True), 10).should_evaluate
    assert not _step(TrainProgress("t", show=False), 10).should_evaluate
    assert not _step(TrainProgress("t", show=False, eval_at_end=True), 9).should_evaluate


def test_the_bar_follows_the_steps_and_shows_the_loss_then_the_metric():
    cb = TrainProgress("t", show=True, metric="eval_val_ndcg@10")
    cb.on_train_begin(None, TrainerState(global_step=2, max_steps=10), TrainerControl())
    _step(cb, 5)
    assert cb.bar.n == 5
    cb.on_log(None, TrainerState(global_step=5), None, logs={"loss": 0.5})
    assert cb.bar.postfix == "loss=0.5000"
    cb.on_log(None, TrainerState(global_step=5), None, logs={"eval_val_ndcg@10": 0.75})
    assert cb.bar.postfix == "val_ndcg@10=0.7500"
    cb.on_train_end(None, None, None)
