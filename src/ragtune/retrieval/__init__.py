"""First-stage retrieval: BM25 (bm25s), exact dense search (sentence-transformers) and their fusion.

Every retriever returns a run ``{query_id: {doc_id: score}}``; :func:`parse_system` turns a spec string such as
``bm25``, ``dense:minilm``, ``hybrid:PATH`` or a pipeline ``hybrid:PATH>rerank:CROSS_ENCODER`` into a
:class:`RetrievalSystem`; rerankers live in :mod:`ragtune.retrieval.rerank` (imported on first use).
"""

from ragtune.retrieval.bm25 import BM25Retriever, Tokenizer, doc_text
from ragtune.retrieval.dense import DenseRetriever
from ragtune.retrieval.systems import (
    DEFAULT_SYSTEMS,
    BM25System,
    DenseSystem,
    HybridSystem,
    RetrievalSystem,
    parse_system,
    reciprocal_rank_fusion,
    weighted_fusion,
)

__all__ = [
    "DEFAULT_SYSTEMS",
    "BM25Retriever",
    "BM25System",
    "DenseRetriever",
    "DenseSystem",
    "HybridSystem",
    "RetrievalSystem",
    "Tokenizer",
    "doc_text",
    "parse_system",
    "reciprocal_rank_fusion",
    "weighted_fusion",
]
