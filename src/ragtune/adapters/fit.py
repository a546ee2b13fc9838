"""The training step proper: an adapter fitted on cached, L2-normalised vectors only (no encoder calls).

Loss: softmax cross-entropy of each query over its positive, the other queries' positives in the batch and hard
negatives mined from the frozen index (:func:`mine_negatives`), at similarity scale ``config.scale`` (the
MultipleNegativesRankingLoss objective). Documents that are positives of a query are masked out of its
negatives. With a validation set, nDCG@10 is measured before training (the identity) and after every epoch; the
best state is kept, so the adapter returned is never worse than the base encoder on validation.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ragtune.adapters.config import AdapterConfig
from ragtune.adapters.modules import Adapter
from ragtune.evaluate.metrics import evaluate_run

logger = logging.getLogger(__name__)

VAL_METRICS = ("ndcg@10", "mrr@10", "hit@5")
_CHUNK = 1024


@dataclass
class VectorSet:
    """Queries and documents as normalised vectors; ``positives[i]`` = document rows relevant to query ``i``."""

    queries: torch.Tensor
    docs: torch.Tensor
    positives: list[list[int]]
    query_ids: list[str] = field(default_factory=list)
    doc_ids: list[str] = field(default_factory=list)

    def qrels(self) -> dict[str, dict[str, int]]:
        return {q: {self.doc_ids[d]: 1 for d in pos} for q, pos in zip(self.query_ids, self.positives, strict=True)}


@dataclass
class FitResult:
    adapter: Adapter
    epochs_run: int
    best_epoch: int
    steps: int
    history: list[dict[str, Any]]
    val_base: dict[str, float] | None
    val_best: dict[str, float] | None
    seconds: float
    p_value: float | None = None  # paired test, best epoch vs the frozen encoder on validation


def _padded(rows: list[list[int]]) -> torch.Tensor:
    width = max(1, max((len(r) for r in rows), default=1))
    out = torch.full((len(rows), width), -1, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.tensor(r, dtype=torch.long)
    return out


def mine_negatives(queries: torch.Tensor, docs: torch.Tensor, positives: list[list[int]], top_k: int,
                   margin: float = 0.05) -> torch.Tensor:
    """Per query, the best ``top_k`` documents of the frozen index that are not positives and score at most
    ``(1 - margin)`` x the best positive's score (the false-negative guard), looked for among the top
    ``2 * top_k + positives``; ``-1`` pads short rows."""
    pos = _padded(positives)
    k = min(2 * top_k + pos.shape[1], docs.shape[0])
    out = torch.full((queries.shape[0], top_k), -1, dtype=torch.long)
    for lo in range(0, queries.shape[0], _CHUNK):
        scores = queries[lo:lo + _CHUNK] @ docs.T
        p = pos[lo:lo + _CHUNK]
        pos_scores = torch.where(p >= 0, scores.gather(1, p.clamp(min=0)), torch.tensor(float("-inf"))).amax(1)
        vals, idx = torch.topk(scores, k, dim=1)
        keep = ~(idx[:, :, None] == p[:, None, :]).any(-1) & (vals <= (1 - margin) * pos_scores[:, None])
        order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, :top_k]
        chosen = idx.gather(1, order)
        chosen[~keep.gather(1, order)] = -1
        out[lo:lo + _CHUNK, :chosen.shape[1]] = chosen
    return out


def evaluate_vectors(adapter: Adapter | None, val: VectorSet, side: str = "query", top_k: int = 100,
                     *, per_query: bool = False) -> dict[str, Any]:
    """nDCG@10, MRR@10 and hit@5 of exact search over ``val`` (pytrec_eval), with ``adapter`` applied or not.

    With ``per_query``, the result also holds ``"per_query"``: query_id -> nDCG@10 (for the paired test)."""
    with torch.no_grad():
        q, d = val.queries, val.docs
        if adapter is not None:
            q = F.normalize(adapter(q), dim=-1)
            if side == "both":
                d = F.normalize(adapter(d), dim=-1)
        run: dict[str, dict[str, float]] = {}
        k = min(top_k, d.shape[0])
        for lo in range(0, q.shape[0], _CHUNK):
            vals, idx = torch.topk(q[lo:lo + _CHUNK] @ d.T, k, dim=1)
            for qid, irow, vrow in zip(val.query_ids[lo:lo + _CHUNK], idx.tolist(), vals.tolist(), strict=True):
                run[qid] = {val.doc_ids[i]: float(v) for i, v in zip(irow, vrow, strict=True)}
    scores = evaluate_run(val.qrels(), run, VAL_METRICS)
    out: dict[str, Any] = dict(scores.means)
    if per_query:
        out["per_query"] = scores.per_query["ndcg@10"]
    return out


@contextlib.contextmanager
def _one_thread():
    """Run the loop on one intra-op thread: its matrices are tiny, so thread hand-offs cost more than they save
    (measured on 2 shared cores: 200 steps took 25.8 s on 2 threads, 2.4 s on 1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _schedule(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class _Best:
    """Keeps the best validation state; an epoch counts as better only when it gains ``min_delta`` nDCG@10."""

    def __init__(self, min_delta: float) -> None:
        self.min_delta = min_delta
        self.score, self.state, self.epoch, self.bad = float("-inf"), None, 0, 0
        self.per_query: dict[str, float] = {}

    def offer(self, epoch: int, scores: dict[str, Any], adapter: Adapter) -> None:
        if epoch == 0 or scores["ndcg@10"] >= self.score + self.min_delta:
            self.score, self.epoch, self.bad = scores["ndcg@10"], epoch, 0
            self.state, self.per_query = copy.deepcopy(adapter.state_dict()), scores["per_query"]
        else:
            self.bad += 1


def _significant(base: dict[str, float], best: dict[str, float], alpha: float | None) -> tuple[bool, float]:
    """Is ``best`` better than ``base`` on the same validation queries (paired Wilcoxon, ragtune's test)?"""
    from ragtune.evaluate.stats import paired_test

    qids = list(base)
    p = paired_test([best[q] for q in qids], [base[q] for q in qids])
    return alpha is None or p < alpha, p


def fit_adapter(adapter: Adapter, train: VectorSet, config: AdapterConfig, val: VectorSet | None = None,
                *, show_progress: bool | None = None) -> FitResult:
    """Train ``adapter`` in place on ``train`` (normalised vectors); returns it with the best validation state."""
    from tqdm.auto import tqdm

    start = time.perf_counter()
    gen = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    pairs = torch.tensor([(qi, d) for qi, pos in enumerate(train.positives) for d in pos], dtype=torch.long)
    pos_of = _padded(train.positives)
    pool = (mine_negatives(train.queries, train.docs, train.positives, config.mine_top_k, config.mine_margin)
            if config.mined_negatives else None)
    batch = min(config.batch_size, len(pairs))
    total = math.ceil(len(pairs) / batch) * config.epochs
    optimizer = torch.optim.AdamW(adapter.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = _schedule(optimizer, math.ceil(total * config.warmup_ratio), total)
    history: list[dict[str, Any]] = []
    best = _Best(config.min_delta)
    init_state = copy.deepcopy(adapter.state_dict())
    val_base, base_per_query = None, {}
    if val is not None:
        val_base = evaluate_vectors(None, val, config.side, per_query=True)
        base_per_query = val_base.pop("per_query")
        best.offer(0, {**val_base, "per_query": base_per_query}, adapter)
        history.append({"epoch": 0, "loss": None, **{f"val_{k}": v for k, v in val_base.items()}})
    show = logger.getEffectiveLevel() <= logging.INFO if show_progress is None else show_progress
    bar = tqdm(total=total, desc="adapter", unit="step", file=sys.stderr, disable=not show)
    epoch = step = 0
    with _one_thread():
        for epoch in range(1, config.epochs + 1):
            adapter.train()
            order = pairs[torch.randperm(len(pairs), generator=gen)]
            losses = []
            for lo in range(0, len(order), batch):
                chunk = order[lo:lo + batch]
                if len(chunk) < 2:  # a lone pair has no in-batch negative
                    continue
                loss = _step_loss(adapter, train, chunk, pos_of, pool, config, gen)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                losses.append(loss.item())
                step += 1
                bar.update(1)
            record: dict[str, Any] = {"epoch": epoch, "loss": sum(losses) / max(1, len(losses))}
            if val is not None:
                scores = evaluate_vectors(adapter.eval(), val, config.side, per_query=True)
                record.update({f"val_{k}": v for k, v in scores.items() if k != "per_query"})
                best.offer(epoch, scores, adapter)
                bar.set_postfix(loss=f"{record['loss']:.4f}", val_ndcg=f"{scores['ndcg@10']:.4f}")
            history.append(record)
            logger.debug("adapter epoch %d: %s", epoch, record)
            if val is not None and best.bad >= config.patience:
                logger.info("early stopping after epoch %d (best: epoch %d, val nDCG@10 %.4f)", epoch, best.epoch,
                            best.score)
                break
    bar.close()
    best_epoch, val_best, p_value = epoch, None, None
    if val is not None and best.state is not None:
        best_epoch = best.epoch
        if best_epoch == 0:
            logger.warning("no epoch beat the frozen encoder on validation by min_delta=%s nDCG@10 (frozen: %.4f): "
                           "the adapter is left at the identity", config.min_delta, val_base["ndcg@10"])
        else:
            keep, p_value = _significant(base_per_query, best.per_query, config.significance)
            if not keep:
                logger.warning("the adapter's best validation nDCG@10 (%.4f, epoch %d) is not significantly better "
                               "than the frozen encoder's (%.4f; paired Wilcoxon p = %.3g, significance=%s): the "
                               "adapter is left at the identity", best.score, best_epoch, val_base["ndcg@10"],
                               p_value, config.significance)
                best_epoch, best.state = 0, init_state
        adapter.load_state_dict(best.state)
        val_best = next({k[4:]: v for k, v in h.items() if k.startswith("val_")} for h in history
                        if h["epoch"] == best_epoch)
    return FitResult(adapter.eval(), epoch, best_epoch, step, history, val_base, val_best,
                     time.perf_counter() - start, p_value)


def _step_loss(adapter: Adapter, train: VectorSet, chunk: torch.Tensor, pos_of: torch.Tensor,
               pool: torch.Tensor | None, config: AdapterConfig, gen: torch.Generator) -> torch.Tensor:
    qi, di = chunk[:, 0], chunk[:, 1]
    cols = di
    if pool is not None:
        cand = pool[qi]
        keys = torch.rand(cand.shape, generator=gen).masked_fill(cand < 0, -1.0)
        m = min(config.mined_negatives, cand.shape[1])
        picked = cand.gather(1, torch.topk(keys, m, dim=1).indices).flatten()
        cols = torch.cat([di, picked[picked >= 0]])
    q = F.normalize(adapter(train.queries[qi]), dim=-1)
    d = train.docs[cols]
    if config.side == "both":
        d = F.normalize(adapter(d), dim=-1)
    logits = config.scale * (q @ d.T)
    mask = (cols[None, :, None] == pos_of[qi][:, None, :]).any(-1)
    n = len(chunk)
    mask[torch.arange(n), torch.arange(n)] = False
    logits = logits.masked_fill(mask, float("-inf"))
    return F.cross_entropy(logits, torch.arange(n))
