"""The batch sampler of embedding training: batches in which no in-batch negative is a positive."""

from __future__ import annotations

import random
from collections.abc import Collection, Hashable, Iterator, Sequence
from typing import Any

from sentence_transformers.base.sampler import DefaultBatchSampler

__all__ = ["NoSharedPositiveBatchSampler"]


class NoSharedPositiveBatchSampler(DefaultBatchSampler):
    """Batches in which no two examples share a key (the positive chunk id), so no in-batch negative is a positive.

    ``keys[i]`` is the key of dataset row ``i``. Rows are shuffled with ``seed + epoch`` and placed first-fit
    into the open batches that do not hold their key yet; a batch is emitted when full. Batches left partial
    at the end are emitted too, unless ``drop_last`` (or they hold a single example). Deterministic per epoch, so resuming mid-epoch replays
    the same batches. Pass ``functools.partial(NoSharedPositiveBatchSampler, keys=keys)`` as
    ``SentenceTransformerTrainingArguments(batch_sampler=...)``.

    With mined hard negatives, ``negative_keys[i]`` holds the keys of row ``i``'s negatives: a batch then also
    never mixes a row whose positive is another row's hard negative (every negative column is an in-batch
    candidate for every query, so that passage would be scored as a negative of its own query).

    DDP (``num_replicas`` processes, see :mod:`ragtune.train.distributed`): accelerate wraps this sampler in its
    ``BatchSamplerShard``, which gives rank ``r`` the batches ``r, r + n, r + 2n, ...``. So the rows are packed
    into global batches of ``batch_size * num_replicas`` distinct keys and each is emitted as ``num_replicas``
    interleaved slices of ``batch_size``: one optimiser step then covers one global batch, each rank's batch has
    no shared positive, and neither has the global batch (so losses may gather negatives across ranks). Partial
    global batches are dropped, as sentence-transformers does under DDP (it forces ``drop_last``).
    """

    def __init__(self, dataset: Any, batch_size: int, drop_last: bool, valid_label_columns: list[str] | None = None,
                 generator: Any = None, seed: int = 0, *, keys: Sequence[Hashable], num_replicas: int = 1,
                 negative_keys: Sequence[Collection[Hashable]] | None = None) -> None:
        super().__init__(dataset, batch_size=batch_size, drop_last=drop_last,
                         valid_label_columns=valid_label_columns, generator=generator, seed=seed)
        if len(keys) != len(dataset):
            raise ValueError(f"keys has {len(keys)} entries but the dataset has {len(dataset)} rows")
        self.keys = list(keys)
        if negative_keys is not None and len(negative_keys) != len(keys):
            raise ValueError(f"negative_keys has {len(negative_keys)} entries but keys has {len(keys)}")
        self.negative_keys = [frozenset(n) for n in negative_keys] if negative_keys is not None else None
        self.num_replicas = max(1, num_replicas)  # DDP processes
        self._cached: tuple[int, list[list[int]]] | None = None

    def batches(self, epoch: int) -> list[list[int]]:
        if self._cached is not None and self._cached[0] == epoch:
            return self._cached[1]
        order = list(range(len(self.keys)))
        random.Random(f"{self.seed}:{epoch}").shuffle(order)
        size = self.batch_size * self.num_replicas  # DDP: one global batch per step (see the class doc)
        full: list[list[int]] = []
        open_: list[tuple[list[int], set[Hashable], set[Hashable]]] = []  # rows, their keys, their negatives
        none: frozenset[Hashable] = frozenset()
        for idx in order:
            key = self.keys[idx]
            negs = self.negative_keys[idx] if self.negative_keys is not None else none
            for pos, (batch, held, held_negs) in enumerate(open_):
                if key not in held and key not in held_negs and held.isdisjoint(negs):
                    batch.append(idx)
                    held.add(key)
                    held_negs.update(negs)
                    if len(batch) == size:
                        full.append(batch)
                        del open_[pos]
                    break
            else:
                if size == 1:
                    full.append([idx])
                else:
                    open_.append(([idx], {key}, set(negs)))
        if self.num_replicas > 1:  # DDP: slice r of every global batch goes to rank r
            full = [batch[r::self.num_replicas] for batch in full for r in range(self.num_replicas)]
        elif not self.drop_last:  # a lone example has no in-batch negative: its loss is 0, the step wasted
            full.extend(batch for batch, _, _ in open_ if len(batch) > 1)
        self._cached = (epoch, full)
        return full

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches(self.epoch)

    def __len__(self) -> int:
        return len(self.batches(self.epoch))
