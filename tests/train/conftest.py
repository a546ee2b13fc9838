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


@pytest.fixture
def guard_set():
    """A one-query set whose BM25 ranking puts a same-document sibling, a near duplicate and a passage from
    another document above the positive: what the reranker's false-negative guard has to sort out."""
    from ragtune.data.beir import BeirDataset

    corpus = {
        "pos": {"title": "", "text": "alpha beta gamma delta epsilon zeta eta theta", "doc": "paper1"},
        "sibling": {"title": "", "text": "alpha beta gamma alpha beta gamma kappa", "doc": "paper1"},
        "near": {"title": "", "text": "alpha beta gamma alpha delta epsilon zeta eta", "doc": "paper2"},
        "other": {"title": "", "text": "alpha beta gamma alpha beta gamma kappa lambda mu nu xi", "doc": "paper3"},
        "below": {"title": "", "text": "alpha omega", "doc": "paper4"},
        "far": {"title": "", "text": "unrelated words only here", "doc": "paper5"},
    }
    return BeirDataset(corpus, {"q": "alpha beta gamma"}, {"q": {"pos": 1}}, name="guard")
