"""Forgetting guard: never hand over a fine-tuned embedding model that is worse than the one it started from.

``guard_model(base, finetuned, val, output_dir)`` scores both models (exact dense search) on the validation split
and on a small general-domain check set (:func:`ragtune.data.checkset.load_checkset`, or the user's own BEIR dir):

1. the fine-tuned model is kept when it beats the base on validation by more than ``min_val_gain`` and loses at
   most ``max_general_drop`` on the check set;
2. otherwise each weight mix ``alpha * finetuned + (1 - alpha) * base`` in ``alphas`` is scored the same way, and
   among those that pass both tests the one that keeps the most of the fine-tuning change is kept ("interpolated";
   ``prefer="most_kept"``, the default: largest :func:`~ragtune.train.mixing.kept_change`, a tie going to the
   better validation score; ``prefer="validation"``: the best validation score, a tie going to the larger change
   kept). Validation is the test that the domain gained, not the ranking: on the validation splits ragtune can
   build (a hundred queries), mixes that differ by several points on a full test set score within noise of each
   other, while the test score rose with the share of the change kept (bench/RESULTS.md, "Module mixes"). The
   default grid is a tenth apart: how much of the fine-tuned weights a
   domain can take before the check set suffers varies from run to run, and each mix costs only two small
   evaluations. With ``layer_mixes`` (the default) the same contest also holds *layer mixes*: the fine-tuned
   embeddings and lowest ``k`` transformer layers under the base model's upper layers, for ``k = 1 … L-1`` (those
   whose upper layers training left unchanged, e.g. with ``freeze_upper_layers``, are the fine-tuned model again
   and are skipped). With ``module_mixes`` (default ``["attn", "ffn"]``) it also holds *module mixes*: the whole
   fine-tuned model with the base's attention (or feed-forward) weights in layers ``k`` and up, ``k = 1 … L-1``
   (any mix equal to the fine-tuned model, e.g. the base attention after training with ``freeze_modules``, is
   skipped).
   With ``sparse_mixes`` (off by default) it also holds *sparse mixes*: the base plus only the
   largest share of each weight's change (the rest reset to the base; :func:`ragtune.train.mixing.sparse_mix`).
   What a domain changes most is its vocabulary and phrasing, which the lower layers read; in the one model
   measured (bench/RESULTS.md) what the general check set lost sat mostly in the upper layers, and a layer mix
   kept more of the domain gain than a uniform mix at the same cost on the check set, and resetting only the
   attention (or only the feed-forward) half of those upper layers kept more still. Sparse mixes are off by
   default because, on that model, keeping only the largest changes cost the check set nearly as much as the
   whole fine-tuned model (bench/RESULTS.md, "Sparse mixes").
   How much of the change a mix keeps is a property of its weights, known before any measurement, so with
   ``prefer="most_kept"`` the mixes are scored from the one that keeps the most down, each on the check set
   first (validation only if it passes there), and the search stops once a mix passes both tests: no mix that
   keeps less could win. The choice is the one scoring every mix would make; ``measure_all`` scores them all
   anyway (for studies such as ``bench/guard_curve.py``);
3. failing that, the base model is kept, and the report says so.

It writes::

    output_dir/model/      the chosen model as a plain sentence-transformers directory (written atomically; for
                           "base" it is a saved copy of the base model, so the path is always usable)
    output_dir/guard.json  every measurement, the decision, the alpha and a one-sentence message
                           (:meth:`GuardResult.to_dict`; the report reads it from eval/guard.json)
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from ragtune._io import atomic_write_json
from ragtune.config import _Config
from ragtune.data.beir import BeirDataset, load_beir
from ragtune.data.checkset import load_checkset
from ragtune.errors import ConfigError
from ragtune.train.mixing import (
    _load,
    _mix,
    _mix_lower_layers,
    _mix_modules,
    _name,
    _save,
    _sparse_mix,
    count_layers,
    interpolate_weights,
    kept_change,
    mix_lower_layers,
    module_mix,
    parse_module_spec,
    sparse_mix,
    sublayer_kind,
    top_changed_depth,
)

logger = logging.getLogger(__name__)

FINE_TUNED, INTERPOLATED, BASE = "fine-tuned", "interpolated", "base"
VERDICTS = {FINE_TUNED: "pass", INTERPOLATED: "warn", BASE: "fail"}  # the report's badge classes
_EPS = 1e-9  # float noise allowed when comparing a drop to its limit


class GuardConfig(_Config):
    enabled: bool = Field(True, description="run the guard before handing over a fine-tuned embedding model")
    metric: str = Field("ndcg@10", description="metric the decision uses (any of ragtune.evaluate.metrics.METRICS)")
    min_val_gain: float = Field(0.0, ge=0, description="the model kept must beat the base on validation by MORE "
                                                       "than this (0.0 = strictly better)")
    max_general_drop: float = Field(0.005, ge=0, le=1, description="largest allowed loss on the check set "
                                                                   "(0.005 = half a point of nDCG@10)")
    alphas: list[float] = Field(default_factory=lambda: [round(0.1 * i, 1) for i in range(1, 10)],
                                description="share of fine-tuned weights in the mixes tried when the fine-tuned "
                                            "model fails (default 0.1, 0.2, ..., 0.9; [] = never interpolate)")
    layer_mixes: bool = Field(True, description="also try the fine-tuned embeddings and lowest k transformer layers "
                                                "under the base's upper layers (k = 1 ... L-1) when the "
                                                "fine-tuned model fails")
    module_mixes: list[Literal["attn", "ffn"]] = Field(
        default_factory=lambda: ["attn", "ffn"],
        description="also try the fine-tuned model with the base's weights of these sub-layers (attn: attention, "
                    "ffn: feed-forward) in layers k and up (k = 1 ... L-1) when the fine-tuned model fails "
                    "([] = never)")
    prefer: Literal["most_kept", "validation"] = Field(
        "most_kept", description="which passing mix wins: the one keeping the most of the fine-tuning change "
                                 "(most_kept) or the one with the best validation score (validation)")
    sparse_mixes: list[float] = Field(default_factory=list,
                                      description="also try sparse mixes when the fine-tuned model fails: the base "
                                                  "plus, in every weight, this share of the entries training changed "
                                                  "most (e.g. [0.1, 0.2, 0.3, 0.5]; default [] = never)")
    measure_all: bool = Field(False, description="score every mix on both sets; by default (with "
                                                 "prefer='most_kept') the search stops at the first mix that passes, "
                                                 "trying those that keep the most of the change first, and a mix "
                                                 "that fails the check set is not scored on validation")
    check_set: str = Field("auto", description="'auto' (language of the validation corpus), 'en', 'zh', or the "
                                               "path of your own BEIR directory")
    batch_size: int = Field(64, ge=1, description="encoding batch size")

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        from ragtune.evaluate.metrics import METRICS

        if value not in METRICS:
            raise ValueError(f"metric={value!r} is unknown; choose one of {', '.join(METRICS)}")
        return value

    @field_validator("alphas", "sparse_mixes")
    @classmethod
    def _shares(cls, value: list[float], info: ValidationInfo) -> list[float]:
        bad = [x for x in value if not 0.0 < x < 1.0]
        if bad:
            what = {"alphas": "the share of fine-tuned weights: 0 is the base, 1 the fine-tuned model; "
                              "e.g. [0.25, 0.5, 0.75]",
                    "sparse_mixes": "the share of changed entries kept; e.g. [0.1, 0.2, 0.3, 0.5]"}[info.field_name]
            raise ValueError(f"{info.field_name} {bad}: each must lie strictly between 0 and 1 ({what})")
        return sorted(set(value))

    @field_validator("check_set")
    @classmethod
    def _check_set(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("check_set is empty: use 'auto', 'en', 'zh' or the path of a BEIR directory")
        return value.lower() if value.lower() in ("auto", "en", "zh") else value


@dataclass
class GuardResult:
    """What :func:`guard_model` decided, and every score it measured."""

    decision: str  # "fine-tuned" | "interpolated" | "base"
    alpha: float | None  # share of fine-tuned weights in a uniform mix (1.0 fine-tuned, 0.0 base; None: another mix)
    model_dir: Path
    message: str
    metric: str
    check_set: str
    scores: dict[str, dict[str, dict[str, float]]]  # candidate -> "val" | "general" -> metric -> mean
    kept: dict[str, float] = field(default_factory=dict)  # candidate -> share of the fine-tuning change it keeps
    config: dict[str, Any] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    layers: int | None = None  # a layer mix: how many of the lowest transformer layers are the fine-tuned ones
    keep: float | None = None  # a sparse mix: the share of each weight's largest changes kept
    module: str | None = None  # a module mix: "attn@3" = the base's attention weights in layers 3 and up

    @property
    def candidate(self) -> str:
        """The name of the kept model in :attr:`scores`."""
        if self.decision != INTERPOLATED:
            return self.decision
        if self.keep is not None:
            return _sparse_name(self.keep)
        if self.module is not None:
            return _module_name(*parse_module_spec(self.module))
        return _layers_name(self.layers) if self.layers is not None else _candidate_name(self.alpha)

    @property
    def verdict(self) -> str:
        return VERDICTS[self.decision]

    def score(self, candidate: str, split: str) -> float:
        return self.scores[candidate][split][self.metric]

    def to_dict(self) -> dict[str, Any]:
        """guard.json: flat scalars first (the report shows those), then the full measurements."""
        chosen = self.candidate
        return {
            "verdict": self.verdict,
            "message": self.message,
            "decision": self.decision,
            "candidate": self.candidate,
            "alpha": self.alpha,
            "layers": self.layers,
            "keep": self.keep,
            "module": self.module,
            "metric": self.metric,
            "check_set": self.check_set,
            "val_base": self.score(BASE, "val"),
            "val_fine_tuned": self.score(FINE_TUNED, "val"),
            "val_chosen": self.score(chosen, "val"),
            "general_base": self.score(BASE, "general"),
            "general_fine_tuned": self.score(FINE_TUNED, "general"),
            "general_chosen": self.score(chosen, "general"),
            "kept_chosen": self.kept.get(chosen),
            "min_val_gain": self.config.get("min_val_gain"),
            "max_general_drop": self.config.get("max_general_drop"),
            "seconds": round(self.seconds, 2),
            "scores": self.scores,
            "kept": self.kept,
            "paths": self.paths,
            "config": self.config,
        }


def _candidate_name(alpha: float | None) -> str:
    return f"alpha={alpha:g}"


def _layers_name(k: int | None) -> str:
    return f"lower-layers={k}"


def _sparse_name(keep: float) -> str:
    return f"sparse={keep:g}"


def _module_name(kind: str, k: int) -> str:
    return f"base-{kind}-from={k}"


# --- evaluation ------------------------------------------------------------------------------------------------


def _evaluate(model, dataset: BeirDataset, batch_size: int) -> dict[str, float]:
    """Mean of every ragtune metric for ``model`` on ``dataset`` (exact cosine search over the whole corpus)."""
    from ragtune.evaluate.metrics import evaluate_run
    from ragtune.retrieval.dense import DenseRetriever

    queries = {q: dataset.queries[q] for q in dataset.qrels if q in dataset.queries}
    retriever = DenseRetriever(model, batch_size=batch_size, top_k=100, show_progress=False)
    run = retriever.search(dataset.corpus, queries)
    return evaluate_run(dataset.qrels, run).means


def general_check_set(config: GuardConfig, val: BeirDataset) -> tuple[BeirDataset, str]:
    """The general-domain set the guard checks, and its name: ``config.check_set`` ('auto' picks the packaged
    check set in the language of ``val``'s corpus)."""
    choice = config.check_set
    if choice == "auto":
        from ragtune.lang import detect_language
        from ragtune.retrieval.bm25 import doc_text

        choice = detect_language(doc_text(doc) for doc in val.corpus.values())
    if choice in ("en", "zh"):
        return load_checkset(choice), f"ragtune-checkset-{choice}"
    path = Path(choice)
    if not path.is_dir():
        raise ConfigError(f"guard check_set={config.check_set!r}: not 'auto', 'en', 'zh' or an existing BEIR "
                          "directory; fix the path or use one of the packaged check sets")
    return load_beir(path), str(path)


def _general_ok(general: float, base_general: float, cfg: GuardConfig) -> bool:
    return base_general - general <= cfg.max_general_drop + _EPS


def _passes(val: float, general: float, base_val: float, base_general: float, cfg: GuardConfig) -> bool:
    return val - base_val > cfg.min_val_gain + _EPS and _general_ok(general, base_general, cfg)


def _points(x: float) -> str:
    return f"{100 * x:.1f}"


def _failure_reason(scores: dict, cfg: GuardConfig) -> str:
    m = cfg.metric
    bv, fv = scores[BASE]["val"][m], scores[FINE_TUNED]["val"][m]
    bg, fg = scores[BASE]["general"][m], scores[FINE_TUNED]["general"][m]
    reasons = []
    if not fv - bv > cfg.min_val_gain + _EPS:
        gain = f" by more than {_points(cfg.min_val_gain)} points" if cfg.min_val_gain else ""
        reasons.append(f"did not beat the base on validation{gain} ({m} {fv:.3f} vs {bv:.3f})")
    if bg - fg > cfg.max_general_drop + _EPS:
        reasons.append(f"lost {_points(bg - fg)} points of {m} on the general check set ({fg:.3f} vs {bg:.3f}; "
                       f"limit {_points(cfg.max_general_drop)})")
    return " and ".join(reasons)


def _message(decision: str, alpha: float | None, scores: dict, cfg: GuardConfig, layers: int | None = None,
             keep: float | None = None, module: str | None = None, kept: float | None = None) -> str:
    m = cfg.metric
    bv, bg = scores[BASE]["val"][m], scores[BASE]["general"][m]
    if decision == FINE_TUNED:
        fv, fg = scores[FINE_TUNED]["val"][m], scores[FINE_TUNED]["general"][m]
        return (f"The fine-tuned model beat the base on validation ({m} {fv:.3f} vs {bv:.3f}) and stayed within "
                f"{_points(cfg.max_general_drop)} points on the general check set ({fg:.3f} vs {bg:.3f}), so it was "
                "kept.")
    why = _failure_reason(scores, cfg)
    if decision == INTERPOLATED:
        if keep is not None:
            c = scores[_sparse_name(keep)]
            what_kept = f"a sparse mix: the base plus the largest {keep:.0%} of each weight's changes"
        elif module is not None:
            kind, k = parse_module_spec(module)
            c = scores[_module_name(kind, k)]
            what = {"attn": "attention", "ffn": "feed-forward"}[kind]
            what_kept = f"the fine-tuned model with the base model's {what} weights in transformer layers {k} and up"
        elif layers is not None:
            c = scores[_layers_name(layers)]
            what_kept = f"the fine-tuned embeddings and lowest {layers} transformer layers under the base model's upper layers"
        else:
            c = scores[_candidate_name(alpha)]
            what_kept = f"a weight mix with {alpha:g} of the fine-tuned weights"
        share = f"; it keeps {kept:.0%} of the fine-tuning change" if kept is not None else ""  # by weight distance
        return (f"The fine-tuned model {why}, so ragtune kept {what_kept} ({m} {c['val'][m]:.3f} on validation vs "
                f"{bv:.3f} for the base, {c['general'][m]:.3f} on the general check set vs {bg:.3f}{share}).")
    tried = [f"alpha {', '.join(f'{a:g}' for a in cfg.alphas)}"] if cfg.alphas else []
    if any(name.startswith("lower-layers=") for name in scores):
        tried.append("the layer mixes")
    if any(name.startswith("base-") for name in scores):
        tried.append("the module mixes")
    if any(name.startswith("sparse=") for name in scores):
        tried.append("the sparse mixes")
    tried_text = f" and no weight mix ({'; '.join(tried)}) passed both tests" if tried else ""
    return f"The fine-tuned model {why}{tried_text}, so ragtune kept the base model."


def guard_model(
    base: Any,
    finetuned: Any,
    val: BeirDataset,
    output_dir: str | Path,
    config: GuardConfig | None = None,
    general: BeirDataset | None = None,
) -> GuardResult:
    """Keep the fine-tuned model, a base/fine-tuned weight mix, or the base; write it and guard.json.

    ``base`` and ``finetuned`` are sentence-transformers directories or names ("minilm" = the packaged MiniLM),
    or already loaded ``SentenceTransformer`` objects (not modified); ``val`` is the validation split (its qrels
    pick the queries); ``general`` overrides ``config.check_set``. Raises :class:`~ragtune.errors.ConfigError`
    when ``config.enabled`` is false (callers skip the guard then). Returns a :class:`GuardResult`; the chosen
    model is ``output_dir/model``.
    """
    cfg = config or GuardConfig()
    if not cfg.enabled:
        raise ConfigError("guard_model was called with enabled=False; skip the call instead (the pipeline checks "
                          "GuardConfig.enabled), or set enabled: true")
    output_dir = Path(output_dir)
    start = time.perf_counter()
    if general is None:
        general, general_name = general_check_set(cfg, val)
    else:
        general_name = general.name or "custom"
    names = (_name(base), _name(finetuned))
    paths = {"base": names[0], "fine_tuned": names[1], "model": str(output_dir / "model")}
    base_model, ft_model = _load(base), _load(finetuned)
    # each candidate encodes the validation and check-set corpora once; the base is scored once for all of them
    scores: dict[str, dict[str, dict[str, float]]] = {}
    kept = {BASE: 0.0, FINE_TUNED: 1.0}

    def measure(name: str, model, skip_failed: bool = False) -> tuple[float | None, float]:
        """Score ``model`` on the check set, then on validation unless ``skip_failed`` and the check set already
        failed it (validation is then None)."""
        scores[name] = {"general": _evaluate(model, general, cfg.batch_size)}
        g = scores[name]["general"][cfg.metric]
        if skip_failed and not _general_ok(g, scores[BASE]["general"][cfg.metric], cfg):
            logger.info("guard: %s %s general %.4f, past the check set's limit: not scored on validation", name,
                        cfg.metric, g)
            return None, g
        scores[name] = {"val": _evaluate(model, val, cfg.batch_size), **scores[name]}
        v = scores[name]["val"][cfg.metric]
        logger.info("guard: %s %s validation %.4f, general %.4f", name, cfg.metric, v, g)
        return v, g

    base_val, base_gen = measure(BASE, base_model)
    ft_val, ft_gen = measure(FINE_TUNED, ft_model)
    decision, alpha, layers, keep, module, chosen, chosen_name = BASE, 0.0, None, None, None, base_model, BASE
    if _passes(ft_val, ft_gen, base_val, base_gen, cfg):
        decision, alpha, chosen, chosen_name = FINE_TUNED, 1.0, ft_model, FINE_TUNED
    else:
        # among the mixes that pass, the most of the change kept wins (or the best validation score, by
        # cfg.prefer), the other breaking ties; each candidate: (name, how to build it, (alpha, layers, keep,
        # module))
        n_layers = count_layers(ft_model) if cfg.layer_mixes or cfg.module_mixes else 0
        # mixes of k >= the top changed depth equal the fine-tuned model (e.g. trained with frozen upper layers)
        top = min(n_layers, top_changed_depth(base_model, ft_model)) if n_layers else 0
        kinds = [kind for kind in cfg.module_mixes if kind in {sublayer_kind(key) for key in ft_model.state_dict()}]
        candidates = [(_candidate_name(a), lambda a=a: _mix(base_model, ft_model, a, names), (a, None, None, None))
                      for a in cfg.alphas]
        candidates += [(_layers_name(k), lambda k=k: _mix_lower_layers(base_model, ft_model, k, names),
                        (None, k, None, None)) for k in range(1, top if cfg.layer_mixes else 1)]
        candidates += [(_module_name(kind, k), lambda kind=kind, k=k: _mix_modules(base_model, ft_model, kind, k, names),
                        (None, None, None, f"{kind}@{k}")) for kind in kinds for k in range(1, top)]
        candidates += [(_sparse_name(x), lambda x=x: _sparse_mix(base_model, ft_model, x, names),
                        (None, None, x, None)) for x in cfg.sparse_mixes]
        shares = {}
        for name, build, _ in candidates:
            shares[name] = kept_change(base_model, build(), ft_model)
            if shares[name] >= 1.0:  # the fine-tuned model again (e.g. trained with those modules frozen): refused
                logger.debug("forgetting guard: %s equals the fine-tuned model; skipped", name)
        candidates = [c for c in candidates if shares[c[0]] < 1.0]
        # most_kept: the first mix (from the most kept down) that passes wins, ties going to the better validation
        # score; a mix below the check set's limit has failed whatever its validation score
        quick = cfg.prefer == "most_kept" and not cfg.measure_all
        if quick:
            candidates.sort(key=lambda c: -shares[c[0]])
        best: tuple[float, float] | None = None
        for i, (name, build, which) in enumerate(candidates):
            if quick and best is not None and shares[name] < best[0] - _EPS:
                logger.info("forgetting guard: %s passed; the %d mixes left keep less of the change and were not "
                            "scored", chosen_name, len(candidates) - i)
                break
            mixed = build()
            v, g = measure(name, mixed, skip_failed=quick)
            kept[name] = shares[name]
            if v is None:
                continue
            rank = (kept[name], v) if cfg.prefer == "most_kept" else (v, kept[name])
            if _passes(v, g, base_val, base_gen, cfg) and (best is None or rank > best):
                best, decision, chosen, chosen_name = rank, INTERPOLATED, mixed, name
                alpha, layers, keep, module = which
    _save(chosen, output_dir / "model")
    message = _message(decision, alpha, scores, cfg, layers, keep, module, kept[chosen_name])
    result = GuardResult(decision=decision, alpha=alpha, model_dir=output_dir / "model", message=message,
                         metric=cfg.metric, check_set=general_name, scores=scores, kept=kept,
                         config=cfg.model_dump(mode="json"), paths=paths, seconds=time.perf_counter() - start,
                         layers=layers, keep=keep, module=module)
    atomic_write_json(output_dir / "guard.json", result.to_dict())
    (logger.info if decision == FINE_TUNED else logger.warning)("forgetting guard: %s", message)
    return result


__all__ = ["GuardConfig", "GuardResult", "count_layers", "general_check_set", "guard_model", "interpolate_weights",
           "load_checkset", "mix_lower_layers", "module_mix", "sparse_mix"]
