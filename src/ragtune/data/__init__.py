"""Data contracts (BEIR shapes), ingestion, chunking and splitting."""

from ragtune.data.beir import (
    BeirDataset,
    DataIssue,
    load_beir,
    load_corpus,
    load_qrels,
    load_queries,
    load_run,
    write_corpus,
    write_qrels,
    write_queries,
    write_run,
)

__all__ = [
    "BeirDataset",
    "DataIssue",
    "load_beir",
    "load_corpus",
    "load_qrels",
    "load_queries",
    "load_run",
    "write_corpus",
    "write_qrels",
    "write_queries",
    "write_run",
]
