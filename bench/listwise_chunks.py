"""Time of one reranker training step, the batch's (query, passage) pairs in one forward pass or in chunks.

sentence-transformers' listwise losses (ListNet, LCE built on it, Lambda) split a batch's pairs into chunks of as
many pairs as the batch has queries unless told otherwise: 8 forward passes of 4 pairs for 4 queries x 8 passages.
``train_reranker`` takes the whole batch at once on a GPU and keeps the chunks on a CPU
(``ragtune.train.reranker_losses.listwise_loss``). This times both on the machine at hand, same batches, same model::

    python bench/listwise_chunks.py --data ../shared/evaldata/scifact --base msmarco --steps 6

Each step: ``--queries`` test queries of the BEIR set, each with its first judged passage and ``--passages - 1``
passages drawn at random, LCE forward and backward, an AdamW step. The first step of each mode is a warm-up and is
not timed.
"""

from __future__ import annotations

import argparse
import random
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="a BEIR folder")
    ap.add_argument("--base", default="msmarco", help="reranker base, as RerankerTrainConfig.base")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--queries", type=int, default=4, help="queries per batch (train_reranker's default: 4)")
    ap.add_argument("--passages", type=int, default=8, help="passages per query, the positive included")
    ap.add_argument("--max-length", type=int, default=256)
    args = ap.parse_args()

    import torch
    from sentence_transformers import CrossEncoder

    from ragtune.data.beir import load_beir
    from ragtune.retrieval.bm25 import doc_text
    from ragtune.train.reranker import resolve_base
    from ragtune.train.reranker_losses import listwise_loss

    ds = load_beir(args.data)
    rng = random.Random(0)
    ids = list(ds.corpus)
    qids = sorted(ds.qrels)
    batches = []
    for step in range(args.steps + 1):
        queries, docs, labels = [], [], []
        for qid in qids[step * args.queries:(step + 1) * args.queries]:
            positive = next(iter(ds.qrels[qid]))
            negatives = rng.sample([d for d in ids if d not in ds.qrels[qid]], args.passages - 1)
            queries.append(ds.queries[qid])
            docs.append([doc_text(ds.corpus[d]) for d in [positive, *negatives]])
            labels.append(torch.tensor([1.0] + [0.0] * (args.passages - 1)))
        batches.append(([queries, docs], labels))

    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = []
    for whole in (False, True):
        model = CrossEncoder(resolve_base(args.base), num_labels=1, max_length=args.max_length, device=device)
        model.train()  # dropout on, as in training: it changes which attention kernel runs
        loss = listwise_loss("lce", model, whole_batch=whole)
        optim = torch.optim.AdamW(model.parameters(), lr=1e-5)
        times = []
        for inputs, labels in batches:
            t0 = time.perf_counter()
            with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
                value = loss(inputs, [lbl.to(model.device) for lbl in labels])
            value.backward()
            optim.step()
            optim.zero_grad()
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        rows.append(("whole batch" if whole else "chunks of n_queries pairs",
                     sum(times[1:]) / max(1, len(times) - 1)))
        del model, loss, optim

    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    print(f"device: {name}; {args.queries} queries x {args.passages} passages per step, {args.max_length} tokens, "
          f"{args.steps} timed steps, base {args.base}")
    print("| forward passes per step | s per step |\n|---|---|")
    for label, seconds in rows:
        print(f"| {label} | {seconds:.3f} |")


if __name__ == "__main__":
    main()
