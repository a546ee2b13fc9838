"""A small general-domain retrieval check set shipped with ragtune (English and Chinese).

The forgetting guard (:mod:`ragtune.train.guard`) scores the base and the fine-tuned embedding model on it, to see
whether fine-tuning on one domain cost general retrieval quality. See ``README.md`` beside this file.
"""

from __future__ import annotations

from importlib.resources import as_file, files

from ragtune.data.beir import BeirDataset, DataIssue, check_qrels, load_corpus, load_qrels, load_queries
from ragtune.errors import ConfigError

LANGUAGES = ("en", "zh")


def load_checkset(language: str = "en") -> BeirDataset:
    """The packaged check set for ``language`` ("en": 472 passages and queries, "zh": 139), one query per passage."""
    lang = str(language).strip().lower()
    if lang not in LANGUAGES:
        raise ConfigError(f"check set language={language!r}: ragtune ships {', '.join(LANGUAGES)}; pick one, or "
                          "give the path of your own BEIR directory as the guard's check_set")
    root = files(__name__).joinpath(lang)
    issues: list[DataIssue] = []
    # as_file gives a real path even when the package is imported from a zip archive
    with as_file(root.joinpath("corpus.jsonl")) as c, as_file(root.joinpath("queries.jsonl")) as q, \
            as_file(root.joinpath("qrels.tsv")) as r:
        corpus = load_corpus(c, strict=True, issues=issues)
        queries = load_queries(q, strict=True, issues=issues)
        qrels = check_qrels(load_qrels(r, strict=True), corpus, queries, qrels_file=str(r), strict=True)
    return BeirDataset(corpus, {qid: queries[qid] for qid in qrels}, qrels, name=f"ragtune-checkset-{lang}")


__all__ = ["LANGUAGES", "load_checkset"]
