"""``ragtune train embedding ...``: fine-tune a model on a BEIR directory or a generated query set."""

from __future__ import annotations

import json
from pathlib import Path

import typer

train_app = typer.Typer(help="Fine-tune a model (embedding now; reranker, adapter, router later).",
                        no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(train_app, name="train")


@train_app.command("embedding")
def embedding_command(
    data: Path = typer.Option(..., "--data", help="BEIR directory with corpus.jsonl."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for model/ (a sentence-transformers "
                                                            "directory) and train-log.json. Rerun to resume."),
    queries: str = typer.Option("gen-queries.jsonl", "--queries", metavar="FILE",
                                help="Queries file inside --data or a path."),
    qrels: str = typer.Option("gen-qrels.tsv", "--qrels", metavar="FILE",
                              help="Qrels file inside --data (or --data/qrels) or a path."),
    base: str | None = typer.Option(None, "--base", help="sentence-transformers name or path [minilm: the "
                                                         "packaged all-MiniLM-L6-v2]."),
    epochs: float | None = typer.Option(None, "--epochs", help="Training epochs [1]."),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Stop after this many steps (overrides "
                                                                   "--epochs)."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Pairs per batch; more = more in-batch "
                                                                     "negatives [32]."),
    lr: float | None = typer.Option(None, "--lr", help="Learning rate [2e-5]."),
    max_seq_length: int | None = typer.Option(None, "--max-seq-length", help="Tokens per text [256]."),
    seed: int | None = typer.Option(None, "--seed", help="Random seed [42]."),
    val: Path | None = typer.Option(None, "--val", help="BEIR directory to measure nDCG@10 on during training "
                                                        "(e.g. one written by ragtune generate --eval-set)."),
    save_steps: int | None = typer.Option(None, "--save-steps", help="Checkpoint every N steps (default: every "
                                                                     "5 minutes)."),
    config: Path | None = typer.Option(None, "--config", help="ragtune.yaml; its 'embedding' section is used."),
    as_json: bool = typer.Option(False, "--json", help="Print the training summary as JSON."),
) -> None:
    """Fine-tune an embedding model with in-batch negatives (MultipleNegativesRankingLoss)."""
    from rich.console import Console

    from ragtune.config import RunConfig
    from ragtune.data.beir import load_beir
    from ragtune.train.embedding import train_embedding

    overrides = {"embedding.base": base, "embedding.epochs": epochs, "embedding.max_steps": max_steps,
                 "embedding.batch_size": batch_size, "embedding.learning_rate": lr,
                 "embedding.max_seq_length": max_seq_length, "embedding.seed": seed}
    cfg = RunConfig.load(config, overrides=overrides).embedding
    train_set = load_beir(data, queries=queries, qrels=qrels)
    val_set = load_beir(val) if val is not None else None
    result = train_embedding(train_set, cfg, output, val=val_set, save_steps=save_steps)
    console = Console()
    if as_json:
        console.print_json(json.dumps(result.to_dict()))
        return
    loss = f"{result.final_loss:.4f}" if result.final_loss is not None else "n/a"
    console.print(f"fine-tuned {cfg.base} on {result.n_pairs:,} pairs: {result.steps} steps of batch "
                  f"{result.batch_size}, final loss {loss}, {result.seconds:.0f} s", highlight=False)
    for ev in result.evals[-1:]:
        ndcg = ev.get("eval_val_cosine_ndcg@10")
        if ndcg is not None:
            console.print(f"validation nDCG@10 after step {ev.get('step')}: {ndcg:.4f}", highlight=False)
    console.print(f"model: {result.model_dir}", highlight=False, soft_wrap=True)
