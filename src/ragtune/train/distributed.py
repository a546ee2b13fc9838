"""Multi-process (DDP) training: rank helpers, and re-launching a ragtune command under ``torchrun``.

ragtune's trainers are plain sentence-transformers / transformers trainers, so data-parallel training is the
usual launcher story; nothing in the training code changes::

    # N processes on this machine (one per GPU; on CPU the gloo backend is used)
    ragtune train embedding --data DIR --output OUT --nproc 2
    torchrun --standalone --nproc_per_node 2 -m ragtune.cli.app train embedding --data DIR --output OUT
    accelerate launch --multi_gpu --num_processes 2 -m ragtune.cli.app train embedding --data DIR --output OUT

    # from Python: a script that calls ragtune.train.train_embedding(...), started with either launcher
    torchrun --standalone --nproc_per_node 2 my_train.py

The launcher starts N copies of the command and sets ``RANK`` / ``LOCAL_RANK`` / ``WORLD_SIZE`` (and
``MASTER_ADDR`` / ``MASTER_PORT``). Every copy reads the same data, builds the same pairs and batch sampler, and
the trainer (accelerate) hands each process its own share of the batches and keeps the weights identical by
averaging gradients: NCCL on CUDA, gloo on CPU. ``--batch-size`` is per process, so one optimiser step sees
``batch_size * N`` pairs and an epoch takes about ``1/N`` of the steps. Files (the model, ``train-log.json``,
checkpoints) are written by rank 0 only; the others wait for it at a :func:`barrier`.

The helpers below work before ``torch.distributed`` is initialised (they read the launcher's environment) and
outside any launcher (one process: rank 0 of 1, :func:`barrier` is a no-op).
"""

from __future__ import annotations

import functools
import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

logger = logging.getLogger(__name__)

_LAUNCHER_VARS = ("LOCAL_RANK", "TORCHELASTIC_RUN_ID")


def _dist() -> Any | None:
    """``torch.distributed`` when a process group is up, else None (without importing torch needlessly)."""
    if "torch" not in sys.modules:
        return None
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def world_size() -> int:
    """Number of training processes: the process group's size, else ``$WORLD_SIZE`` set by the launcher, else 1."""
    dist = _dist()
    return dist.get_world_size() if dist is not None else max(1, _env_int("WORLD_SIZE", 1))


def rank() -> int:
    """This process's global rank (0 outside a launcher)."""
    dist = _dist()
    return dist.get_rank() if dist is not None else _env_int("RANK", 0)


def local_rank() -> int:
    """This process's rank on its machine (the GPU it drives); 0 outside a launcher."""
    return max(0, _env_int("LOCAL_RANK", 0))


def is_main_process() -> bool:
    """True on the process that writes files and prints results (rank 0, or the only process)."""
    return rank() == 0


def under_launcher() -> bool:
    """True inside a process started by torchrun / ``accelerate launch`` (or by :func:`launch`)."""
    return any(v in os.environ for v in _LAUNCHER_VARS) or world_size() > 1


def init_process_group(cpu: bool | None = None) -> bool:
    """Join the launcher's process group now if there is one and it is not up yet; True when distributed.

    The group is set up through accelerate (as the transformers Trainer does later, which then reuses it):
    NCCL when CUDA is used, gloo on CPU (``cpu=None``: CPU when no GPU is visible). Collective calls time out
    after ``$RAGTUNE_DDP_TIMEOUT_S`` seconds (default 7200, not torch's 1800): the other ranks wait at a
    :func:`barrier` while rank 0 alone mines hard negatives or scores them with a teacher.
    """
    if _dist() is not None:
        return True
    if _env_int("WORLD_SIZE", 1) <= 1:
        return False
    from datetime import timedelta

    import torch
    from accelerate import PartialState

    timeout = timedelta(seconds=max(60, _env_int("RAGTUNE_DDP_TIMEOUT_S", 7200)))
    PartialState(cpu=(not torch.cuda.is_available()) if cpu is None else cpu, timeout=timeout)
    return _dist() is not None


def barrier() -> None:
    """Wait until every process gets here (joins the launcher's group first if needed); no-op in one process."""
    if world_size() <= 1 or not init_process_group():
        return
    _dist().barrier()


def any_process(flag: bool) -> bool:
    """True when ``flag`` is true on at least one process, so all processes take the same branch.

    For decisions made from local clocks (e.g. "checkpoint now?") that every rank must agree on. Every process
    must call it at the same point; without a process group it returns ``flag``.
    """
    dist = _dist()
    if dist is None or dist.get_world_size() <= 1:
        return flag
    import torch

    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


@functools.cache
def _sync_sampler_epoch() -> type:
    from transformers import TrainerCallback

    class SyncSamplerEpoch(TrainerCallback):
        """Set the epoch on the batch sampler (and the wrappers around it) at the start of every epoch.

        transformers sets it through accelerate's ``DataLoaderShard`` and one wrapper below; when a DDP run
        resumes mid-epoch the sampler sits under ``SkipBatchSampler`` and ``BatchSamplerShard``, out of its reach,
        and would replay epoch 0's order. The epoch is the trainer's own: finished steps // steps per epoch.
        """

        def on_epoch_begin(self, args, state, control, train_dataloader=None, **kwargs):
            if train_dataloader is None:
                return
            steps = max(1, len(train_dataloader) // max(1, args.gradient_accumulation_steps))
            epoch = state.global_step // steps
            node = getattr(train_dataloader, "batch_sampler", None)
            while node is not None:
                if hasattr(node, "set_epoch"):
                    node.set_epoch(epoch)
                node = getattr(node, "batch_sampler", None)

    return SyncSamplerEpoch


def __getattr__(name: str) -> Any:  # SyncSamplerEpoch is built on first use: transformers is a heavy import
    if name == "SyncSamplerEpoch":
        return _sync_sampler_epoch()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def launch(nproc: int, argv: Sequence[str], *, module: str = "ragtune.cli.app") -> int:
    """Run ``python -m module *argv`` as ``nproc`` processes under ``torch.distributed.run --standalone``.

    Blocks until all of them exit and returns the launcher's exit status (non-zero when any process failed).
    ``--standalone`` picks a free local rendezvous port, so several launches can run side by side.
    """
    if nproc < 1:
        from ragtune.errors import ConfigError

        raise ConfigError(f"--nproc {nproc}: the number of processes must be at least 1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", module, *argv]
    env = dict(os.environ)
    if "OMP_NUM_THREADS" not in env:  # torchrun would set 1; share this machine's cores between the processes
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    logger.info("launching %d processes: %s", nproc, " ".join(cmd))
    return subprocess.run(cmd, env=env, check=False).returncode


def cli_argv(ctx: Any, drop: Sequence[str] = ("nproc",)) -> list[str]:
    """Rebuild the command line of a running click/typer command from its parsed context (global options,
    sub-command names, and every option the user set), leaving out the parameters named in ``drop``.

    Options that came from environment variables are left out too: the launched processes inherit the
    environment, and secrets such as API keys then stay off the process list. (Duck-typed: typer ships its
    own copy of click, so click's classes cannot be used for isinstance checks.)
    """
    chain = []
    while ctx is not None:
        chain.append(ctx)
        ctx = ctx.parent
    argv: list[str] = []
    for depth, c in enumerate(reversed(chain)):
        if depth:
            argv.append(c.info_name)
        for param in c.command.params:
            if param.name in drop or param.name not in c.params:
                continue
            if getattr(c.get_parameter_source(param.name), "name", None) not in ("COMMANDLINE", "PROMPT"):
                continue
            argv += _param_argv(param, c.params[param.name])
    return argv


def _param_argv(param: Any, value: Any) -> list[str]:
    if value is None:
        return []
    if param.param_type_name == "argument":
        values = value if isinstance(value, list | tuple) else [value]
        return [_cli_str(v) for v in values]
    if param.is_flag:
        if value:
            return [param.opts[0]]
        return [param.secondary_opts[0]] if param.secondary_opts else []
    values = value if param.multiple else [value]
    out: list[str] = []
    for v in values:
        out += [param.opts[0], *(map(_cli_str, v) if isinstance(v, tuple) else [_cli_str(v)])]
    return out


def _cli_str(value: Any) -> str:
    return str(getattr(value, "value", value))
