"""Synthetic questions from an LLM: fast (async, batched), resumable (durable request cache), filtered.

    from ragtune.generate.llm import LLMConfig, generate_llm_questions, write_llm_result

    config = LLMConfig(base_url="http://127.0.0.1:8000/v1", model="qwen2.5", concurrency=32)
    result = generate_llm_questions(corpus, config, cache_dir="run/generate")
    print(result.report.to_markdown(), result.stats)
    write_llm_result(result, "run/generate/train")   # gen-queries.jsonl + gen-qrels.tsv + gen-info.json

The ``openai``, ``tenacity`` and ``aiolimiter`` packages come with ``pip install 'ragtune[llm]'`` (``gguf`` too,
for local GGUF models).
"""

from ragtune.generate.filters import FilterConfig, FilterReport, filter_questions, filter_set
from ragtune.generate.llm.cache import CachedResult, ResultCache, request_key
from ragtune.generate.llm.clients import (
    Completion,
    LLMClient,
    LocalTransformersClient,
    OpenAICompatibleClient,
    make_client,
    resolve_local_model,
)
from ragtune.generate.llm.config import LLMConfig
from ragtune.generate.llm.limits import RateLimiter, RequestError, RetryPolicy, TransientError
from ragtune.generate.llm.parsing import ParseError, parse_questions
from ragtune.generate.llm.prompts import PromptBuilder, PromptTemplate, load_few_shot, load_template
from ragtune.generate.llm.questions import (
    LLMGenerationResult,
    RunStats,
    generate_llm_questions,
    plan_requests,
    write_llm_result,
)

__all__ = [
    "CachedResult",
    "Completion",
    "FilterConfig",
    "FilterReport",
    "LLMClient",
    "LLMConfig",
    "LLMGenerationResult",
    "LocalTransformersClient",
    "OpenAICompatibleClient",
    "ParseError",
    "PromptBuilder",
    "PromptTemplate",
    "RateLimiter",
    "RequestError",
    "ResultCache",
    "RetryPolicy",
    "RunStats",
    "TransientError",
    "filter_questions",
    "filter_set",
    "generate_llm_questions",
    "load_few_shot",
    "load_template",
    "make_client",
    "parse_questions",
    "plan_requests",
    "request_key",
    "resolve_local_model",
    "write_llm_result",
]
