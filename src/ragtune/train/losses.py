"""Losses of the embedding trainer by name (``EmbeddingTrainConfig.loss``), all from sentence-transformers.

``mnrl`` (MultipleNegativesRankingLoss: in-batch plus mined negatives; ``directions``, ``partition_mode`` and
``hardness_mode`` pick its symmetric, GTE-style or hardness-weighted forms), ``cached-mnrl`` (its GradCache form: large
batches in bounded memory), ``margin-mse`` and ``kl`` (distil a cross-encoder teacher's scores over the positive and
mined negatives); :func:`build_loss` wraps any of them in MatryoshkaLoss when truncated sizes are asked for, or in
:class:`~ragtune.train.anchor.AnchoredLoss` when ``anchor_weight`` asks to keep the embeddings near the base's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ragtune.config import EmbeddingTrainConfig

logger = logging.getLogger(__name__)


def _ranking_options(loss_class: type, config: EmbeddingTrainConfig) -> dict[str, Any]:
    """The MNRL options ``config`` trains with (directions, partition, hardness weighting), checked against what the
    installed sentence-transformers' ``loss_class`` accepts: left out with a warning where only the default recipe
    asked for them, an error where the config did."""
    import inspect

    from ragtune.errors import ConfigError

    options = config.ranking_options()
    missing = sorted(set(options) - set(inspect.signature(loss_class.__init__).parameters))
    if not missing:
        return options
    import sentence_transformers

    asked = set(config.changed_ranking_options())
    groups = ({"directions", "partition_mode"}, {"hardness_mode", "hardness_strength"})
    refused = sorted(k for k in missing if any(k in group and group & asked for group in groups))
    if refused:
        raise ConfigError(f"{', '.join(refused)}: {loss_class.__name__} of sentence-transformers "
                          f"{sentence_transformers.__version__} has no such option; upgrade it "
                          "(pip install -U sentence-transformers) or leave the option at its default")
    logger.warning("%s of sentence-transformers %s has no %s: training with plain MNRL there, not the default "
                   "recipe's (pip install -U sentence-transformers for it)", loss_class.__name__,
                   sentence_transformers.__version__, ", ".join(missing))
    return {k: v for k, v in options.items() if k not in missing}


def _mnrl(model: Any, config: EmbeddingTrainConfig) -> Any:
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss as Loss

    return Loss(model, scale=config.scale, **_ranking_options(Loss, config))


def _cached_mnrl(model: Any, config: EmbeddingTrainConfig) -> Any:
    from sentence_transformers.sentence_transformer.losses import CachedMultipleNegativesRankingLoss as Loss

    return Loss(model, scale=config.scale, mini_batch_size=config.mini_batch_size, **_ranking_options(Loss, config))


def _margin_mse(model: Any, config: EmbeddingTrainConfig) -> Any:
    from sentence_transformers.sentence_transformer.losses import MarginMSELoss
    from sentence_transformers.util import pairwise_cos_sim

    return MarginMSELoss(model, similarity_fct=pairwise_cos_sim)


def _kl(model: Any, config: EmbeddingTrainConfig) -> Any:
    from sentence_transformers.sentence_transformer.losses import DistillKLDivLoss
    from sentence_transformers.util import pairwise_cos_sim

    # student logits = scale * cosine, as in MNRL; teacher logits = score / teacher_temperature
    return DistillKLDivLoss(model, similarity_fct=pairwise_cos_sim, student_temperature=1.0 / config.scale,
                            teacher_temperature=config.teacher_temperature)


LOSSES: dict[str, Callable[[Any, EmbeddingTrainConfig], Any]] = {
    "mnrl": _mnrl, "cached-mnrl": _cached_mnrl, "margin-mse": _margin_mse, "kl": _kl}
"""Loss factories by the name used in ``EmbeddingTrainConfig.loss``: ``factory(model, config) -> loss module``."""

DISTIL = ("margin-mse", "kl")


def build_loss(model: Any, config: EmbeddingTrainConfig) -> Any:
    """The loss ``config.loss`` names, wrapped in MatryoshkaLoss when ``config.matryoshka_dims`` is set and in
    AnchoredLoss (a frozen copy of ``config.base`` as the anchor) when ``config.anchor_in_use`` is above 0."""
    from ragtune.errors import ConfigError

    loss = LOSSES[config.loss](model, config)
    if config.anchor_weight > 0 and not config.anchor_in_use:
        logger.info("no anchor to the base model: the default anchor_weight does not work with %s",
                    "matryoshka_dims" if config.matryoshka_dims else config.loss)
    if config.anchor_in_use > 0:
        from ragtune.models import resolve_model
        from ragtune.train.anchor import anchored

        return anchored(model, loss, resolve_model(config.base), config.anchor_in_use, config.anchor_texts)
    if config.matryoshka_dims:
        from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss

        dim = model.get_embedding_dimension()
        if dim is not None and max(config.matryoshka_dims) > dim:
            raise ConfigError(f"matryoshka_dims={config.matryoshka_dims}: the model's embeddings have {dim} "
                              f"dimensions; use sizes up to {dim}, e.g. [{dim}, {dim // 2}, {dim // 4}]")
        loss = MatryoshkaLoss(model, loss, matryoshka_dims=config.matryoshka_dims)
    return loss


def loss_name(loss: Any) -> str:
    if type(loss).__name__ in ("MatryoshkaLoss", "AnchoredLoss"):  # a wrapper: name the loss inside too
        return f"{type(loss).__name__}({type(loss.loss).__name__})"
    return type(loss).__name__
