"""Resume guard shared by the trainers: only checkpoints made with the same fingerprint are resumed."""

from __future__ import annotations

import json
import logging

from ragtune.train.checkpoints import latest_checkpoint


def test_checkpoints_of_other_settings_are_discarded(tmp_path, caplog):
    ckpt = tmp_path / "checkpoints"
    (ckpt / "checkpoint-2").mkdir(parents=True)
    (ckpt / "checkpoint-2" / "trainer_state.json").write_text("{}")
    (ckpt / "ragtune-fingerprint.json").write_text(json.dumps({"key": "old"}))
    with caplog.at_level(logging.WARNING, logger="ragtune"):
        assert latest_checkpoint(ckpt, "new") is None
    assert not ckpt.exists() and "discarding checkpoints" in caplog.text

    (ckpt / "checkpoint-2").mkdir(parents=True)
    (ckpt / "checkpoint-2" / "trainer_state.json").write_text("{}")
    (ckpt / "checkpoint-4").mkdir()  # killed while saving: no trainer_state.json
    (ckpt / "ragtune-fingerprint.json").write_text(json.dumps({"key": "same"}))
    assert latest_checkpoint(ckpt, "same") == str(ckpt / "checkpoint-2")
    assert not (ckpt / "checkpoint-4").exists()
