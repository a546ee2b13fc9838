"""Data-parallel (DDP) training: rank helpers, the sharded sampler, relaunching, and a real 2-process gloo run."""

from __future__ import annotations

import json
import os
import sys
from types import SimpleNamespace

import pytest

from ragtune.train import NoSharedPositiveBatchSampler
from ragtune.train import distributed as ddp

_LAUNCH_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "TORCHELASTIC_RUN_ID")

# Run inside every process started by the launcher: record what this rank did, then run the real CLI.
_JOB = r'''
import hashlib, json, os, sys

import accelerate.data_loader as adl
from transformers.trainer_callback import CallbackHandler

import ragtune.train.embedding as emb
from ragtune.train import distributed

out_dir, argv = sys.argv[1], sys.argv[2:]
record = {"batches": [], "writes": []}

shard_iter = adl.BatchSamplerShard.__iter__
def recording_iter(self):  # the rows this rank is handed, batch by batch
    for batch in shard_iter(self):
        record["batches"].append(list(batch))
        yield batch
adl.BatchSamplerShard.__iter__ = recording_iter

train_end = CallbackHandler.on_train_end
def on_train_end(self, args, state, control):  # the in-memory weights of this rank after training
    h = hashlib.sha1()
    for _, p in sorted(self.model.named_parameters()):
        h.update(p.detach().cpu().numpy().tobytes())
    record["sha"], record["steps"] = h.hexdigest(), state.global_step
    return train_end(self, args, state, control)
CallbackHandler.on_train_end = on_train_end

write_json, write_dir = emb.atomic_write_json, emb.atomic_dir
emb.atomic_write_json = lambda path, obj: (record["writes"].append(os.path.basename(path)), write_json(path, obj))[1]
emb.atomic_dir = lambda path: (record["writes"].append(os.path.basename(path)), write_dir(path))[1]

from ragtune.cli.app import main
sys.argv = ["ragtune", *argv]
try:
    main()
finally:
    record.update(rank=distributed.rank(), world=distributed.world_size(), local_rank=distributed.local_rank())
    with open(os.path.join(out_dir, f"rank{record['rank']}.json"), "w") as fh:
        json.dump(record, fh)
'''


@pytest.fixture()
def single_process(monkeypatch):
    for var in _LAUNCH_VARS:
        monkeypatch.delenv(var, raising=False)


@pytest.fixture()
def pairs_dir(tmp_path):
    """40 (query, chunk) pairs over 40 distinct chunks, as a BEIR directory with a generated query set."""
    root = tmp_path / "data"
    root.mkdir()
    with open(root / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for i in range(40):
            fh.write(json.dumps({"_id": f"c{i}", "title": f"Topic {i}",
                                 "text": f"Topic {i} is about fact {i}, number {i * 7} and item {i * 3}."}) + "\n")
    with open(root / "gen-queries.jsonl", "w", encoding="utf-8") as fh:
        for i in range(40):
            fh.write(json.dumps({"_id": f"q{i}", "text": f"which topic has fact {i} and number {i * 7}"}) + "\n")
    with open(root / "gen-qrels.tsv", "w", encoding="utf-8") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        fh.writelines(f"q{i}\tc{i}\t1\n" for i in range(40))
    return root


# --- helpers without a launcher ----------------------------------------------------------------------------------


def test_rank_helpers_in_one_process(single_process):
    assert (ddp.world_size(), ddp.rank(), ddp.local_rank()) == (1, 0, 0)
    assert ddp.is_main_process() and not ddp.under_launcher()
    ddp.barrier()  # no process group, nothing to wait for
    assert ddp.any_process(True) is True and ddp.any_process(False) is False
    assert ddp.init_process_group() is False


def test_rank_helpers_read_the_launcher_environment(single_process, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert (ddp.world_size(), ddp.rank(), ddp.local_rank()) == (4, 3, 1)
    assert not ddp.is_main_process() and ddp.under_launcher()


# --- the sampler under DDP ---------------------------------------------------------------------------------------


def test_sharded_sampler_gives_each_rank_its_own_slice_of_a_global_batch():
    from accelerate.data_loader import BatchSamplerShard

    keys = [f"k{i % 30}" for i in range(75)]  # 30 chunks, up to 3 queries each
    per_rank = [list(BatchSamplerShard(NoSharedPositiveBatchSampler(keys, batch_size=4, drop_last=True, seed=1,
                                                                    keys=keys, num_replicas=3),
                                       num_processes=3, process_index=r, even_batches=False))
                for r in range(3)]
    assert len({len(b) for b in per_rank}) == 1 and len(per_rank[0]) >= 3  # same number of steps on every rank
    for step in zip(*per_rank, strict=True):
        assert all(len(batch) == 4 for batch in step)
        global_keys = [keys[i] for batch in step for i in batch]
        assert len(set(global_keys)) == 12  # no shared positive in any rank's batch, nor across the step
    used = [i for batches in per_rank for batch in batches for i in batch]
    assert len(used) == len(set(used))  # no row twice in an epoch
    single = NoSharedPositiveBatchSampler(keys, batch_size=4, drop_last=False, seed=1, keys=keys)
    assert len(single) > len(per_rank[0]) * 2  # one process needs ~3x the steps for the same rows


def test_sampler_epoch_reaches_through_the_ddp_wrappers():
    from accelerate.data_loader import BatchSamplerShard, DataLoaderShard, SkipBatchSampler

    keys = [f"k{i}" for i in range(16)]
    sampler = NoSharedPositiveBatchSampler(keys, batch_size=2, drop_last=True, seed=0, keys=keys, num_replicas=2)
    loader = DataLoaderShard(keys, batch_sampler=BatchSamplerShard(sampler, num_processes=2, process_index=0))
    assert len(loader) == 4
    # what transformers reaches when a DDP run resumes mid-epoch: nothing sets the epoch on our sampler
    resumed = DataLoaderShard(keys, batch_sampler=SkipBatchSampler(loader.batch_sampler, skip_batches=1))
    resumed.set_epoch(2)
    assert sampler.epoch == 0
    callback = ddp.SyncSamplerEpoch()
    callback.on_epoch_begin(SimpleNamespace(gradient_accumulation_steps=1), SimpleNamespace(global_step=9), None,
                            train_dataloader=loader)
    assert sampler.epoch == 2  # step 9 of 4-step epochs: the third epoch
    callback.on_epoch_begin(SimpleNamespace(gradient_accumulation_steps=1), SimpleNamespace(global_step=4), None,
                            train_dataloader=loader)
    assert sampler.epoch == 1


# --- launching ---------------------------------------------------------------------------------------------------


def test_nproc_relaunches_the_same_command(single_process, monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from ragtune.cli.app import app

    calls = []
    monkeypatch.setattr(ddp, "launch", lambda nproc, argv: calls.append((nproc, argv)) or 7)
    argv = ["-q", "train", "embedding", "--data", str(tmp_path), "-o", str(tmp_path / "out"), "--batch-size", "8",
            "--lr", "0.001", "--json", "--nproc", "3"]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 7  # the launcher's exit status
    assert calls == [(3, ["--quiet", "train", "embedding", "--data", str(tmp_path), "--output", str(tmp_path / "out"),
                          "--batch-size", "8", "--lr", "0.001", "--json"])]


def test_launch_returns_the_exit_status_of_the_processes(single_process, tmp_path, monkeypatch):
    # rank 1 fails, but only once rank 0 has written its file: the launcher stops the others when one fails
    (tmp_path / "ddp_exit.py").write_text(
        "import os, sys, time\n"
        "open(os.path.join(sys.argv[1], 'r' + os.environ['RANK']), 'w').write(os.environ['WORLD_SIZE'])\n"
        "deadline = time.time() + 120\n"
        "while os.environ['RANK'] == '1' and not os.path.exists(os.path.join(sys.argv[1], 'r0')) "
        "and time.time() < deadline:\n"
        "    time.sleep(0.05)\n"
        "sys.exit(int(sys.argv[2]) if os.environ['RANK'] == '1' else 0)\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), *sys.path]))
    assert ddp.launch(2, [str(tmp_path), "3"], module="ddp_exit") != 0
    assert sorted(p.name for p in tmp_path.glob("r*")) == ["r0", "r1"]
    assert (tmp_path / "r1").read_text() == "2"
    with pytest.raises(ValueError, match="--nproc 0"):
        ddp.launch(0, [])


# --- a real run: 2 processes, gloo on CPU ------------------------------------------------------------------------


def test_two_process_gloo_training_produces_one_working_model(single_process, tiny_model_path, pairs_dir, tmp_path,
                                                               monkeypatch, capfd):
    import numpy as np
    from sentence_transformers import SentenceTransformer

    job_dir = tmp_path / "job"
    job_dir.mkdir()
    (job_dir / "ddp_job.py").write_text(_JOB)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(job_dir), *sys.path]))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # gloo on CPU even where a GPU is present
    out = tmp_path / "run"
    argv = ["train", "embedding", "--data", str(pairs_dir), "-o", str(out), "--base", tiny_model_path,
            "--batch-size", "4", "--lr", "1e-3", "--max-seq-length", "32", "--epochs", "1", "--negatives", "0"]
    assert ddp.launch(2, [str(job_dir), *argv], module="ddp_job") == 0

    ranks = [json.loads((job_dir / f"rank{r}.json").read_text()) for r in range(2)]
    assert [(r["rank"], r["world"]) for r in ranks] == [(0, 2), (1, 2)]
    # each rank trained on its own half of every global batch of 8: 40 rows in 5 steps (one process: 10)
    assert [r["steps"] for r in ranks] == [5, 5]
    assert [len(r["batches"]) for r in ranks] == [5, 5]
    for b0, b1 in zip(ranks[0]["batches"], ranks[1]["batches"], strict=True):
        assert len(b0) == len(b1) == 4 and not set(b0) & set(b1)
    assert sorted(i for r in ranks for b in r["batches"] for i in b) == list(range(40))
    assert ranks[0]["sha"] == ranks[1]["sha"]  # DDP kept the weights identical
    assert ranks[1]["writes"] == []  # only rank 0 writes files
    assert ranks[0]["writes"].count("model") == 1 and ranks[0]["writes"].count("train-log.json") == 1

    assert sorted(p.name for p in out.iterdir()) == ["model", "train-log.json"]  # no checkpoints, no temp dirs
    log = json.loads((out / "train-log.json").read_text())
    assert (log["steps"], log["steps_per_epoch"], log["processes"], log["batch_size"]) == (5, 5, 2, 4)
    assert [row["step"] for row in log["losses"]] == [1, 2, 3, 4, 5]
    stdout = " ".join(capfd.readouterr().out.split())  # rich wraps long lines
    assert stdout.count("fine-tuned ") == 1 and "5 steps of batch 4" in stdout  # one summary, from rank 0

    import hashlib

    trained = SentenceTransformer(str(out / "model"), device="cpu")
    h = hashlib.sha1()
    for _, p in sorted(trained.named_parameters()):
        h.update(p.detach().cpu().numpy().tobytes())
    assert h.hexdigest() == ranks[0]["sha"]
    base = SentenceTransformer(tiny_model_path, device="cpu")
    texts = ["which topic has fact 3 and number 21", "Topic 3 is about fact 3, number 21 and item 9."]
    new, old = trained.encode(texts), base.encode(texts)
    assert np.isfinite(new).all() and new.shape == old.shape
    assert not np.allclose(new, old, atol=1e-4)
