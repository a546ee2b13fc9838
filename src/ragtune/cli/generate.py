"""``ragtune generate --data DIR``: training queries for a corpus (``gen-queries.jsonl`` + ``gen-qrels.tsv``)."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("generate")(generate_command)


def _corpus_file(data: Path) -> Path:
    from ragtune.errors import ConfigError

    if data.is_file():
        return data
    for name in ("corpus.jsonl", "corpus.jsonl.gz"):
        if (data / name).is_file():
            return data / name
    raise ConfigError(f"--data {str(data)!r}: no corpus.jsonl there. Give a BEIR directory or a corpus file "
                      "(make one with: ragtune ingest DOCS --output DIR).")


def generate_command(
    data: Path = typer.Option(..., "--data", help="BEIR directory with corpus.jsonl (or the corpus file)."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Folder for gen-queries.jsonl and "
                                                                   "gen-qrels.tsv (default: the --data folder)."),
    method: str | None = typer.Option(None, "--method", help="auto, ict, crop or llm [auto: the LLM when one is "
                                                             "configured, else ict]."),
    per_chunk: int | None = typer.Option(None, "--per-chunk", help="Queries per chunk [2]."),
    mask_prob: float | None = typer.Option(None, "--mask-prob", help="ICT: chance the query sentence is cut "
                                                                     "from its passage in training [0.9]."),
    seed: int | None = typer.Option(None, "--seed", help="Random seed [42]."),
    eval_set: bool = typer.Option(False, "--eval-set", help="Write an evaluation BEIR directory instead: ICT "
                                                            "queries whose sentence is removed from the corpus "
                                                            "copy (corpus.jsonl, queries.jsonl, qrels/test.tsv)."),
    distractors: Path | None = typer.Option(None, "--distractors", help="With --eval-set: a BEIR directory (or "
                                                "corpus file) whose chunks join the corpus unjudged, e.g. the "
                                                "training split for a validation set, so it ranks as the full "
                                                "index does."),
    max_distractors: int | None = typer.Option(None, "--max-distractors", min=0, help="With --distractors: at "
                                               "most this many of its chunks (a seeded sample) [2000]."),
    llm_base_url: str | None = typer.Option(None, "--llm-base-url", help="OpenAI-compatible endpoint "
                                                                         "[$OPENAI_BASE_URL]."),
    llm_model: str | None = typer.Option(None, "--llm-model", help="Model name at the endpoint "
                                                                   "[$RAGTUNE_LLM_MODEL]."),
    llm_api_key: str | None = typer.Option(None, "--llm-api-key", help="API key [$OPENAI_API_KEY]."),
    local_model: Path | None = typer.Option(None, "--local-model", help="Local HF model directory or .gguf "
                                                                        "file instead of an endpoint."),
    concurrency: int | None = typer.Option(None, "--concurrency", help="LLM requests in flight [16]."),
    rpm: int | None = typer.Option(None, "--rpm", help="LLM requests per minute [unlimited]."),
    tpm: int | None = typer.Option(None, "--tpm", help="LLM tokens per minute [unlimited]."),
    budget_usd: float | None = typer.Option(None, "--budget-usd", help="Stop cleanly before spending more."),
    price_prompt: float | None = typer.Option(None, "--price-prompt", help="USD per 1M prompt tokens."),
    price_completion: float | None = typer.Option(None, "--price-completion", help="USD per 1M completion "
                                                                                   "tokens."),
    prompt_file: Path | None = typer.Option(None, "--prompt-file", help="Prompt template overriding the "
                                                                        "built-in English/Chinese ones."),
    few_shot: Path | None = typer.Option(None, "--few-shot", help="File of real user queries (one per line) to "
                                                                  "imitate."),
    language: str | None = typer.Option(None, "--language", help="Prompt language: auto, en or zh [auto]."),
    cache: Path | None = typer.Option(None, "--cache", help="LLM result cache folder (default: the output "
                                                            "folder); a rerun sends only unfinished requests."),
    config: Path | None = typer.Option(None, "--config", help="ragtune.yaml; its 'generate' and 'llm' sections "
                                                              "are used."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Generate (query, relevant chunk) pairs for fine-tuning, in the BEIR layout."""
    from rich.console import Console

    from ragtune.config import RunConfig
    from ragtune.data.beir import load_corpus, write_beir
    from ragtune.errors import ConfigError
    from ragtune.generate import eval_set as make_eval_set
    from ragtune.generate import generate_queries, write_generated

    if (distractors is not None or max_distractors is not None) and not eval_set:
        raise ConfigError("--distractors and --max-distractors go with --eval-set (they add unjudged chunks to an "
                          "evaluation corpus)")
    overrides = {"generate.method": method, "generate.per_chunk": per_chunk, "generate.mask_prob": mask_prob,
                 "generate.seed": seed, "generate.val_distractors": max_distractors}
    if eval_set and per_chunk is not None:
        overrides["generate.eval_per_chunk"] = overrides.pop("generate.per_chunk")
    overrides.update({"llm.base_url": llm_base_url, "llm.model": llm_model, "llm.api_key": llm_api_key,
                      "llm.local_model": str(local_model) if local_model else None, "llm.concurrency": concurrency,
                      "llm.rpm": rpm, "llm.tpm": tpm, "llm.budget_usd": budget_usd,
                      "llm.price_prompt_per_1m": price_prompt, "llm.price_completion_per_1m": price_completion,
                      "llm.prompt_file": str(prompt_file) if prompt_file else None,
                      "llm.few_shot": str(few_shot) if few_shot else None, "llm.language": language})
    run_cfg = RunConfig.load(config, overrides=overrides)
    cfg = run_cfg.generate
    corpus_path = _corpus_file(data)
    corpus = load_corpus(corpus_path)
    if not corpus:
        raise ConfigError(f"--data {str(data)!r}: {corpus_path} holds no documents.")
    out = output or corpus_path.parent
    if eval_set:
        if out.resolve() == corpus_path.parent.resolve():
            raise ConfigError("--eval-set rewrites corpus.jsonl (query sentences removed); give an --output "
                              f"folder other than {str(out)!r}.")
        ds = make_eval_set(corpus, per_chunk=cfg.eval_per_chunk, seed=cfg.seed, name=out.name)
        added = 0
        if distractors is not None:
            from ragtune.data.split import with_distractors

            ds, added = with_distractors(ds, load_corpus(_corpus_file(distractors)), cfg.val_distractors,
                                         seed=cfg.seed)
        write_beir(out, ds, split="test")
        summary = {"output": str(out), "method": "ict-eval", "queries": len(ds.queries), "chunks": len(corpus),
                   "files": ["corpus.jsonl", "queries.jsonl", "qrels/test.tsv"], "note": None,
                   **({"distractors": added} if distractors is not None else {})}
    else:
        gs = generate_queries(corpus, cfg, llm=run_cfg.llm, cache_dir=cache or out / "llm-cache")
        write_generated(gs, out)
        summary = {"output": str(out), "method": gs.method, "queries": len(gs.queries), "chunks": len(corpus),
                   "files": ["gen-queries.jsonl", "gen-qrels.tsv", "gen-info.json"], "note": gs.note,
                   **{k: gs.info[k] for k in ("stats", "filters", "failed") if k in gs.info}}
    console = Console()
    if as_json:
        console.print_json(json.dumps(summary))
        return
    console.print(f"{summary['queries']:,} {summary['method']} queries for {summary['chunks']:,} chunks "
                  f"written to {out} ({', '.join(summary['files'])})", highlight=False)
    if "distractors" in summary:
        console.print(f"{summary['distractors']:,} chunks of {distractors} added to the corpus as distractors "
                      "(never judged relevant)", highlight=False)
    if summary.get("filters"):
        funnel = summary["filters"]
        steps = ", ".join(f"{s['name']} -{s['dropped']}" for s in funnel.get("steps", []) if s["dropped"])
        console.print(f"filters kept {funnel['kept']} of {funnel['input']} questions ({steps or 'none dropped'})",
                      highlight=False)
    if summary.get("stats"):
        console.print("LLM: " + ", ".join(f"{k} {v}" for k, v in summary["stats"].items()), highlight=False)
    if summary.get("failed"):
        console.print(f"{len(summary['failed'])} chunk(s) failed after retries; rerun to retry them only.")
    if not eval_set:
        console.print(f"next: ragtune train embedding --data {corpus_path.parent} "
                      f"--queries {out / 'gen-queries.jsonl'} --qrels {out / 'gen-qrels.tsv'} --output MODEL_DIR",
                      highlight=False, soft_wrap=True)
