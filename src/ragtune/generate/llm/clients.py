"""LLM backends behind one async interface: ``await client.complete(messages) -> Completion``.

- :class:`OpenAICompatibleClient`: any OpenAI-compatible chat endpoint (OpenAI, vLLM, llama.cpp's server, Ollama,
  DashScope, DeepSeek, GLM, ...) through the official ``openai`` client, with its own retries switched off (the
  caller's :class:`~ragtune.generate.llm.limits.RetryPolicy` is the only one, so retries stay bounded).
- :class:`LocalTransformersClient`: a local transformers causal LM, from a HF directory or a GGUF file (via the
  ``gguf`` package); concurrent ``complete`` calls are gathered into batches for ``model.generate``.

Both translate their errors into :class:`TransientError` / :class:`RequestError` / :class:`ConfigError`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragtune.errors import ConfigError, require
from ragtune.generate.llm.config import ENV_API_KEY, ENV_BASE_URL, ENV_MODEL, LLMConfig
from ragtune.generate.llm.limits import RequestError, TransientError, estimate_tokens
from ragtune.generate.llm.parsing import ParseError

logger = logging.getLogger(__name__)

Messages = list[dict[str, str]]


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int


class LLMClient:
    """The interface: ``name`` (goes into cache keys and metadata), ``params`` and ``complete``."""

    name: str
    params: dict[str, Any]
    preferred_concurrency: int = 1

    async def complete(self, messages: Messages) -> Completion:  # pragma: no cover - interface
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


def make_client(config: LLMConfig) -> LLMClient:
    """The client ``config`` describes (a local model wins over an endpoint)."""
    backend = config.backend()
    if backend == "local":
        return LocalTransformersClient(config.local_model, config.gguf_file,  # type: ignore[arg-type]
                                       temperature=config.temperature, max_tokens=config.max_tokens,
                                       batch_size=config.local_batch_size, seed=config.seed)
    if backend == "openai":
        return OpenAICompatibleClient(config.resolved_base_url(), config.resolved_api_key(),
                                      config.resolved_model(), temperature=config.temperature,  # type: ignore
                                      max_tokens=config.max_tokens, extra_params=config.extra_params,
                                      timeout=config.timeout)
    raise ConfigError(f"no LLM configured: set --llm-model (or ${ENV_MODEL}) plus --llm-base-url (or "
                      f"${ENV_BASE_URL}) or --llm-api-key (or ${ENV_API_KEY}), or --local-model PATH")


# --- OpenAI-compatible ----------------------------------------------------------------------------------------


class OpenAICompatibleClient(LLMClient):
    def __init__(self, base_url: str | None, api_key: str | None, model: str, *, temperature: float = 0.7,
                 max_tokens: int = 256, extra_params: dict[str, Any] | None = None, timeout: float = 60.0):
        openai = require("openai", "llm")
        if not model:
            raise ConfigError(f"model={model!r}: give the model name the endpoint serves (--llm-model or "
                              f"${ENV_MODEL})")
        self.name = model
        self.base_url = base_url
        self.params = {"temperature": temperature, "max_tokens": max_tokens, **(extra_params or {})}
        self.preferred_concurrency = 1
        # Local servers (vLLM, llama.cpp, Ollama) ignore the key, but the client insists on one.
        self._client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key or "not-needed", max_retries=0,
                                          timeout=timeout)
        self._extra = dict(extra_params or {})
        self._openai = openai

    async def complete(self, messages: Messages) -> Completion:
        openai = self._openai
        try:
            resp = await self._client.chat.completions.create(
                model=self.name, messages=messages, temperature=self.params["temperature"],
                max_tokens=self.params["max_tokens"], extra_body=self._extra or None)
        except openai.APITimeoutError as exc:
            raise TransientError(f"timed out: {exc}", kind="timeout") from exc
        except openai.APIConnectionError as exc:
            raise TransientError(f"connection failed ({self.base_url}): {exc}", kind="connection") from exc
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            raise ConfigError(f"the endpoint {self.base_url or 'api.openai.com'} refused the API key "
                              f"({exc.status_code}): check --llm-api-key / ${ENV_API_KEY}") from exc
        except openai.NotFoundError as exc:
            raise ConfigError(f"model={self.name!r} or the endpoint {self.base_url!r} was not found (404): check "
                              f"--llm-model / ${ENV_MODEL} and --llm-base-url (it usually ends in /v1)") from exc
        except openai.APIStatusError as exc:
            code = exc.status_code
            if code in (408, 409, 429) or code >= 500:
                raise TransientError(f"HTTP {code}: {_short(exc)}", kind=str(code),
                                     retry_after=_retry_after(exc.response)) from exc
            raise RequestError(f"HTTP {code}: {_short(exc)}") from exc
        except openai.APIResponseValidationError as exc:
            raise TransientError(f"malformed response: {_short(exc)}", kind="garbage") from exc
        if not resp.choices or not (resp.choices[0].message.content or "").strip():
            raise ParseError("the reply was empty")
        text = resp.choices[0].message.content
        usage = resp.usage
        if usage is None:  # some servers do not count; estimate so budgets still work
            prompt = sum(estimate_tokens(m["content"]) for m in messages)
            return Completion(text, prompt, estimate_tokens(text))
        return Completion(text, usage.prompt_tokens or 0, usage.completion_tokens or 0)

    async def aclose(self) -> None:
        await self._client.close()


def _short(exc: Exception) -> str:
    return " ".join(str(exc).split())[:200]


def _retry_after(response: Any) -> float | None:
    try:
        value = response.headers.get("retry-after")
        return float(value) if value is not None else None
    except (AttributeError, TypeError, ValueError):
        return None


# --- local transformers ---------------------------------------------------------------------------------------


def resolve_local_model(path: str | Path, gguf_file: str | None = None) -> tuple[Path, str | None]:
    """``(folder, gguf_file)`` for ``from_pretrained``; ``gguf_file`` is None for a plain HF directory."""
    p = Path(path).expanduser()
    if not p.exists():
        raise ConfigError(f"local_model={str(path)!r}: no such file or directory. Give a HF model directory "
                          "(with config.json) or a .gguf file.")
    if p.is_file():
        if p.suffix != ".gguf":
            raise ConfigError(f"local_model={str(path)!r}: a file must be a .gguf model; for a HF model give "
                              "its directory")
        if gguf_file and gguf_file != p.name:
            raise ConfigError(f"gguf_file={gguf_file!r} contradicts local_model={str(path)!r}; give one of them")
        return p.parent, p.name
    ggufs = sorted(f.name for f in p.glob("*.gguf"))
    if gguf_file:
        if not (p / gguf_file).is_file():
            raise ConfigError(f"gguf_file={gguf_file!r} is not in {p}; it holds: {', '.join(ggufs) or 'no .gguf'}")
        return p, gguf_file
    if (p / "config.json").is_file():
        return p, None
    if len(ggufs) == 1:
        return p, ggufs[0]
    if ggufs:
        raise ConfigError(f"local_model={str(path)!r} holds several GGUF files ({', '.join(ggufs)}): pick one "
                          "with gguf_file (--local-model DIR/FILE.gguf)")
    raise ConfigError(f"local_model={str(path)!r}: the directory has neither config.json nor a .gguf file")


class LocalTransformersClient(LLMClient):
    """A local causal LM. The weights load on first use, so a rerun whose requests are all cached never loads them."""

    def __init__(self, path: str | Path, gguf_file: str | None = None, *, temperature: float = 0.7,
                 max_tokens: int = 256, batch_size: int = 8, seed: int = 42, device: str | None = None):
        self.path = path
        self.folder, self.gguf = resolve_local_model(path, gguf_file)
        if self.gguf:
            require("gguf", "llm")
        self.device, self.seed = device or "cpu", seed
        self.name = f"{Path(self.folder).resolve()}" + (f"/{self.gguf}" if self.gguf else "")
        self.params = {"temperature": temperature, "max_tokens": max_tokens}
        self.batch_size = batch_size
        self.preferred_concurrency = batch_size
        self._pending: list[tuple[Messages, asyncio.Future]] = []
        self._worker: asyncio.Task | None = None
        self._loaded: tuple[Any, Any] | None = None

    @property
    def tokenizer(self) -> Any:
        return self.load()[0]

    @property
    def model(self) -> Any:
        return self.load()[1]

    def load(self) -> tuple[Any, Any]:
        """Load (once) and return ``(tokenizer, model)``."""
        if self._loaded is not None:
            return self._loaded
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.manual_seed(self.seed)
        folder, gguf = self.folder, self.gguf
        kwargs = {"gguf_file": gguf} if gguf else {}
        logger.info("loading local model %s%s", folder, f" ({gguf})" if gguf else "")
        try:
            tok = AutoTokenizer.from_pretrained(str(folder), **kwargs)
            model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32, **kwargs)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            what = f"GGUF file {gguf!r} in {folder}" if gguf else f"HF model directory {folder}"
            raise ConfigError(f"local_model={str(self.path)!r}: could not load the {what}: {exc}. Give a causal "
                              "LM (llama, qwen2, mistral, ...) as a HF directory or a .gguf file.") from exc
        model.to(self.device).eval()
        tok.padding_side = "left"
        tok.truncation_side = "left"  # an over-long prompt loses its start, not the generation prompt
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token or tok.unk_token
        self._loaded = (tok, model)
        return self._loaded

    def render(self, messages: Messages) -> tuple[str, bool]:
        """The prompt text, and whether it came from the tokenizer's chat template (special tokens included)."""
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True), True
        parts = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
        return "\n\n".join(parts) + "\n\nAssistant:", False

    def generate_batch(self, batch: list[Messages]) -> list[Completion]:
        """Generate replies for a batch of conversations (synchronous)."""
        import torch

        rendered = [self.render(m) for m in batch]
        limit = int(getattr(self.model.config, "max_position_embeddings", 2048) or 2048)
        enc = self.tokenizer([r[0] for r in rendered], return_tensors="pt", padding=True, truncation=True,
                             max_length=max(16, limit - self.params["max_tokens"]),
                             add_special_tokens=not rendered[0][1])
        enc.pop("token_type_ids", None)
        temperature = self.params["temperature"]
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        with torch.no_grad():
            out = self.model.generate(**enc.to(self.model.device), max_new_tokens=self.params["max_tokens"],
                                      pad_token_id=self.tokenizer.pad_token_id, **sampling)
        width = enc["input_ids"].shape[1]
        results = []
        for i in range(len(batch)):
            new = out[i, width:]
            n_new = int((new != self.tokenizer.pad_token_id).sum())
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            results.append(Completion(text, int(enc["attention_mask"][i].sum()), n_new))
        return results

    async def complete(self, messages: Messages) -> Completion:
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending.append((messages, fut))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return await fut

    async def _drain(self) -> None:
        while self._pending:
            await asyncio.sleep(0)  # let the other callers of this tick join the batch
            batch, self._pending = self._pending[:self.batch_size], self._pending[self.batch_size:]
            try:
                results = await asyncio.to_thread(self.generate_batch, [m for m, _ in batch])
            except Exception as exc:  # noqa: BLE001 - handed to every waiting caller
                err = exc if isinstance(exc, ConfigError) else RequestError(f"local generation failed: {exc}")
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(err)
                continue
            for (_, fut), res in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(res)
