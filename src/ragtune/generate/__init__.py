"""Query generation: turn a corpus of chunks into (query, relevant chunk) pairs in the BEIR shapes.

This version generates offline pseudo-queries (inverse cloze, random crop); the LLM generator plugs in behind
``generate_queries(corpus, GenerateConfig(method="llm"))`` later.
"""

from ragtune.generate.pseudo import (
    GeneratedSet,
    crop_queries,
    cut_spans,
    eval_set,
    generate_queries,
    ict_queries,
    load_generated,
    sentence_spans,
    with_ict_queries,
    write_generated,
)

__all__ = [
    "GeneratedSet",
    "crop_queries",
    "cut_spans",
    "eval_set",
    "generate_queries",
    "ict_queries",
    "load_generated",
    "sentence_spans",
    "with_ict_queries",
    "write_generated",
]
