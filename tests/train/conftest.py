"""Fixtures shared by the training tests."""

from __future__ import annotations

import contextlib

import pytest


@pytest.fixture
def interrupted_after(monkeypatch):
    """``with interrupted_after(3): train_embedding(...)`` stops the run with KeyboardInterrupt (as if the user
    pressed Ctrl-C) once step 3 is done, and expects it to; training is normal again after the block."""
    from ragtune.train.progress import TrainProgress

    original = TrainProgress.on_step_end

    @contextlib.contextmanager
    def interrupt(step: int):
        def crash(self, args, state, control, **kwargs):
            original(self, args, state, control, **kwargs)
            if state.global_step == step:
                raise KeyboardInterrupt

        monkeypatch.setattr(TrainProgress, "on_step_end", crash)
        try:
            with pytest.raises(KeyboardInterrupt):
                yield
        finally:
            monkeypatch.setattr(TrainProgress, "on_step_end", original)

    return interrupt
