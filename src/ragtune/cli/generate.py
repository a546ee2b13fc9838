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
    config: Path | None = typer.Option(None, "--config", help="ragtune.yaml; its 'generate' section is used."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Generate (query, relevant chunk) pairs for fine-tuning, in the BEIR layout."""
    from rich.console import Console

    from ragtune.config import RunConfig
    from ragtune.data.beir import load_corpus, write_beir
    from ragtune.errors import ConfigError
    from ragtune.generate import eval_set as make_eval_set
    from ragtune.generate import generate_queries, write_generated

    overrides = {"generate.method": method, "generate.per_chunk": per_chunk, "generate.mask_prob": mask_prob,
                 "generate.seed": seed}
    if eval_set and per_chunk is not None:
        overrides["generate.eval_per_chunk"] = overrides.pop("generate.per_chunk")
    cfg = RunConfig.load(config, overrides=overrides).generate
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
        write_beir(out, ds, split="test")
        summary = {"output": str(out), "method": "ict-eval", "queries": len(ds.queries), "chunks": len(corpus),
                   "files": ["corpus.jsonl", "queries.jsonl", "qrels/test.tsv"], "note": None}
    else:
        gs = generate_queries(corpus, cfg)
        write_generated(gs, out)
        summary = {"output": str(out), "method": gs.method, "queries": len(gs.queries), "chunks": len(corpus),
                   "files": ["gen-queries.jsonl", "gen-qrels.tsv", "gen-info.json"], "note": gs.note}
    console = Console()
    if as_json:
        console.print_json(json.dumps(summary))
        return
    console.print(f"{summary['queries']:,} {summary['method']} queries for {summary['chunks']:,} chunks "
                  f"written to {out} ({', '.join(summary['files'])})", highlight=False)
    if not eval_set:
        console.print(f"next: ragtune train embedding --data {corpus_path.parent} "
                      f"--queries {out / 'gen-queries.jsonl'} --qrels {out / 'gen-qrels.tsv'} --output MODEL_DIR",
                      highlight=False, soft_wrap=True)
