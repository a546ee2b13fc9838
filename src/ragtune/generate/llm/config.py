"""Configuration of the LLM question generator: which model, how fast, how much it may cost, what to ask.

Endpoint, key and model may come from the environment, so a key never has to be written into ``ragtune.yaml``:

- ``OPENAI_BASE_URL`` -> :attr:`LLMConfig.base_url` (any OpenAI-compatible server: vLLM, llama.cpp, Ollama, ...)
- ``OPENAI_API_KEY``  -> :attr:`LLMConfig.api_key`
- ``RAGTUNE_LLM_MODEL`` -> :attr:`LLMConfig.model`

Values set in the config win over the environment. The key is never serialised: ``model_dump`` writes ``None``
for it, so run manifests and ``config.yaml`` stay free of secrets.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_serializer, model_validator

from ragtune.config import _Config
from ragtune.generate.filters import FilterConfig

ENV_BASE_URL = "OPENAI_BASE_URL"
ENV_API_KEY = "OPENAI_API_KEY"
ENV_MODEL = "RAGTUNE_LLM_MODEL"


class LLMConfig(_Config):
    # --- which model -------------------------------------------------------------------------------------------
    base_url: str | None = Field(None, description=f"OpenAI-compatible endpoint (default: ${ENV_BASE_URL})")
    api_key: SecretStr | None = Field(None, description=f"API key (default: ${ENV_API_KEY}); never written out")
    model: str | None = Field(None, description=f"model name at the endpoint (default: ${ENV_MODEL})")
    local_model: Path | None = Field(None, description="local HF model directory or .gguf file (instead of "
                                                       "an endpoint)")
    gguf_file: str | None = Field(None, description="GGUF file name inside local_model when it is a directory")
    local_batch_size: int = Field(8, ge=1, le=512, description="prompts per batch for the local model")
    # --- sampling ----------------------------------------------------------------------------------------------
    temperature: float = Field(0.7, ge=0, le=2)
    max_tokens: int = Field(256, ge=8, le=32_768, description="completion tokens per request")
    extra_params: dict[str, Any] = Field(default_factory=dict,
                                         description="passed as-is in the request body (top_p, seed, ...)")
    # --- throughput --------------------------------------------------------------------------------------------
    concurrency: int = Field(16, ge=1, le=1024, description="requests in flight at once")
    rpm: int | None = Field(None, ge=1, description="requests per minute (None = unlimited)")
    tpm: int | None = Field(None, ge=100, description="estimated tokens per minute (None = unlimited)")
    max_retries: int = Field(4, ge=0, le=20, description="retries per request on 429 / 5xx / timeout / "
                                                          "unparseable reply")
    backoff_base: float = Field(0.5, gt=0, description="seconds; exponential backoff with full jitter")
    backoff_max: float = Field(30.0, gt=0, description="longest wait between two tries, seconds")
    timeout: float = Field(60.0, gt=0, description="seconds per request")
    # --- cost --------------------------------------------------------------------------------------------------
    price_prompt_per_1m: float = Field(0.0, ge=0, description="USD per 1M prompt tokens")
    price_completion_per_1m: float = Field(0.0, ge=0, description="USD per 1M completion tokens")
    budget_usd: float | None = Field(None, gt=0, description="stop sending new requests before this run "
                                                             "would spend more")
    # --- what to ask -------------------------------------------------------------------------------------------
    per_chunk: int = Field(2, ge=1, le=20, description="questions asked for per chunk")
    language: Literal["auto", "en", "zh"] = Field("auto", description="prompt language; auto = detected from "
                                                                      "the corpus")
    prompt_file: Path | None = Field(None, description="template replacing the built-in prompt")
    few_shot: Path | None = Field(None, description="file of real user queries (.txt one per line, or "
                                                    ".jsonl with 'text') whose style to imitate")
    few_shot_count: int = Field(5, ge=1, le=50)
    max_chunk_chars: int = Field(6000, ge=200, description="longer chunks are cut before prompting")
    seed: int = 42
    filters: FilterConfig = Field(default_factory=FilterConfig)

    @field_serializer("api_key")
    def _hide_key(self, value: SecretStr | None) -> None:
        return None

    @model_validator(mode="after")
    def _check(self) -> LLMConfig:
        if self.gguf_file and self.local_model is None:
            raise ValueError(f"gguf_file={self.gguf_file!r} needs local_model (the folder that holds it)")
        if self.gguf_file and not self.gguf_file.endswith(".gguf"):
            raise ValueError(f"gguf_file={self.gguf_file!r} must name a .gguf file")
        return self

    # --- resolution against the environment ---------------------------------------------------------------------
    def resolved_base_url(self) -> str | None:
        return self.base_url or os.environ.get(ENV_BASE_URL) or None

    def resolved_api_key(self) -> str | None:
        if self.api_key is not None:
            return self.api_key.get_secret_value()
        return os.environ.get(ENV_API_KEY) or None

    def resolved_model(self) -> str | None:
        return self.model or os.environ.get(ENV_MODEL) or None

    def backend(self) -> Literal["local", "openai"] | None:
        """Which client :func:`~ragtune.generate.llm.clients.make_client` builds, or None when unconfigured."""
        if self.local_model is not None:
            return "local"
        if self.resolved_model() and (self.resolved_base_url() or self.resolved_api_key()):
            return "openai"
        return None

    def is_configured(self) -> bool:
        """True when a local model is set, or a model name plus an endpoint or key (config or environment)."""
        return self.backend() is not None

    def describe(self) -> str:
        """One line for logs: backend, model and endpoint (never the key)."""
        if self.backend() == "local":
            return f"local model {self.local_model}" + (f" ({self.gguf_file})" if self.gguf_file else "")
        if self.backend() == "openai":
            return f"{self.resolved_model()} at {self.resolved_base_url() or 'the OpenAI API'}"
        return (f"no LLM configured (set {ENV_MODEL} and {ENV_BASE_URL} or {ENV_API_KEY}, or a local_model)")

    def identity(self) -> dict[str, Any]:
        """What decides the generated questions (for the pipeline's step key); excludes the key and speed knobs."""
        keep = {"temperature", "max_tokens", "extra_params", "per_chunk", "language", "prompt_file", "few_shot",
                "few_shot_count", "max_chunk_chars", "seed", "gguf_file", "filters"}
        out = {k: v for k, v in self.model_dump(mode="json").items() if k in keep}
        out.update(backend=self.backend(), model=self.resolved_model() if self.backend() == "openai" else None,
                   local_model=str(self.local_model) if self.local_model else None)
        for name in ("prompt_file", "few_shot"):
            path = getattr(self, name)
            if path is not None and Path(path).is_file():
                out[name + "_mtime"] = int(Path(path).stat().st_mtime)
        return out

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.price_prompt_per_1m + completion_tokens * self.price_completion_per_1m) / 1e6
