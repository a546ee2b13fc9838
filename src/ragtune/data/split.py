"""Split a chunked corpus into train / val / test by source document: ``splits = split_corpus(corpus, config)``.

Chunks of one document share vocabulary and facts; if they landed in two splits, a model trained on one would be
evaluated on near-copies of its training data. So whole documents are shuffled (seeded) and dealt to the splits,
each going to the split furthest below its target share of *chunks*.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from pathlib import Path
from typing import Any

from ragtune._io import atomic_write_json
from ragtune.config import SplitConfig
from ragtune.data.beir import BeirDataset, Corpus, write_corpus
from ragtune.errors import ConfigError

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def group_by_document(corpus: Corpus) -> dict[str, list[str]]:
    """``{document: [chunk ids]}`` from each chunk's ``doc`` field (a chunk without one is its own document)."""
    groups: dict[str, list[str]] = {}
    for cid, chunk in corpus.items():
        groups.setdefault(str(chunk.get("doc") or cid), []).append(cid)
    return groups


def _deal(docs: list[str], sizes: dict[str, int], targets: dict[str, float]) -> dict[str, list[str]]:
    """Give each document to the split with the largest deficit (ties: train, val, test order)."""
    assigned: dict[str, list[str]] = {name: [] for name in targets}
    filled = dict.fromkeys(targets, 0)
    for doc in docs:
        name = max(targets, key=lambda n: targets[n] - filled[n])
        assigned[name].append(doc)
        filled[name] += sizes[doc]
    return assigned


def _ensure_non_empty(assigned: dict[str, list[str]], sizes: dict[str, int], needed: list[str]) -> None:
    """Move the smallest document of the most crowded split into each needed split that got none."""
    for name in needed:
        if assigned[name]:
            continue
        donor = max(assigned, key=lambda n: len(assigned[n]))
        smallest = min(reversed(assigned[donor]), key=lambda d: sizes[d])
        assigned[donor].remove(smallest)
        assigned[name].append(smallest)


def split_corpus(corpus: Corpus, config: SplitConfig | None = None) -> dict[str, Corpus]:
    """``{"train": corpus, "val": corpus, "test": corpus}``; no document has chunks in two of them.

    Every split with a non-zero fraction gets at least one document when there are enough documents
    (with two documents and ``val > 0``, val stays empty and a warning says so).
    """
    config = config or SplitConfig()
    groups = group_by_document(corpus)
    fractions = {"train": config.train, "val": config.val, "test": config.test}
    wanted = [n for n in SPLITS if fractions[n] > 0]
    if len(groups) < 2:
        what = "the corpus is empty" if not groups else f"the corpus has a single document ({next(iter(groups))!r})"
        raise ConfigError(f"cannot split by document: {what}. Chunks of one document never go to two splits, "
                          "so add more documents (at least 3 for train/val/test), or evaluate on a separate "
                          "BEIR set with --data.")
    needed = wanted if len(groups) >= len(wanted) else ["train", "test"]
    if needed != wanted:
        logger.warning("only %d documents: the val split stays empty (add documents to get one)", len(groups))
    sizes = {doc: len(ids) for doc, ids in groups.items()}
    docs = sorted(groups)
    random.Random(config.seed).shuffle(docs)
    total = sum(sizes.values())
    targets = {n: fractions[n] * total for n in needed}
    assigned = _deal(docs, sizes, targets)
    _ensure_non_empty(assigned, sizes, needed)
    where = {cid: name for name, members in assigned.items() for doc in members for cid in groups[doc]}
    splits: dict[str, Corpus] = {name: {} for name in SPLITS}
    for cid, chunk in corpus.items():  # corpus order inside each split
        splits[where[cid]][cid] = chunk
    logger.info("split %d documents: %s", len(groups),
                ", ".join(f"{n} {len(assigned.get(n, []))} docs / {len(splits[n])} chunks" for n in SPLITS))
    return splits


def split_report(splits: dict[str, Corpus], config: SplitConfig | None = None) -> dict[str, Any]:
    report: dict[str, Any] = {
        name: {"documents": len(group_by_document(corpus)), "chunks": len(corpus)} for name, corpus in splits.items()
    }
    if config is not None:
        report["config"] = config.model_dump()
    return report


def write_splits(splits: dict[str, Corpus], out_dir: str | Path, config: SplitConfig | None = None) -> dict[str, Any]:
    """Write ``out_dir/<split>/corpus.jsonl`` (an empty file for an empty split) and ``split-report.json``."""
    out = Path(out_dir)
    for name, corpus in splits.items():
        write_corpus(out / name / "corpus.jsonl", corpus)
    report = split_report(splits, config)
    atomic_write_json(out / "split-report.json", report)
    return report


def with_distractors(dataset: BeirDataset, pool: Corpus, n: int, seed: int = 42) -> tuple[BeirDataset, int]:
    """``dataset`` with up to ``n`` chunks of ``pool`` (seeded sample; ids already in its corpus are skipped) added
    to its corpus as distractors, and how many were added.

    A validation split ranks only its own chunks, a few hundred at most, where nearly any model finds the right
    one; the index a user deploys holds every chunk. Training chunks as distractors make validation rank the way
    the real index does, so it tells checkpoints and weight mixes apart. Their text is only ever a wrong answer
    here, so no training text is judged.
    """
    if n < 0:
        raise ConfigError(f"distractors n={n}: must be 0 or more")
    candidates = sorted(cid for cid in pool if cid not in dataset.corpus)
    picked = random.Random(seed).sample(candidates, min(n, len(candidates)))
    if not picked:
        return dataset, 0
    corpus = {**dataset.corpus, **{cid: pool[cid] for cid in sorted(picked)}}
    return dataclasses.replace(dataset, corpus=corpus), len(picked)
