"""Configuration objects. Each stage owns one; :class:`RunConfig` gathers them for ``ragtune run``.

Every config validates itself on construction, rejects unknown keys (so a typo in ``ragtune.yaml`` is an error that
names the key, not a silent default), and round-trips through YAML/JSON.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from ragtune.errors import ConfigError

# the texts the embedding trainer's anchor holds (ragtune.train.anchor)
AnchorTexts = Literal["passages", "all"]
Direction = Literal["query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc"]
HardnessMode = Literal["in_batch_negatives", "hard_negatives", "all_negatives"]
# The default embedding recipe (issue 4; measured in bench/RESULTS.md): GTE's improved contrastive loss with the
# mined negatives weighted by hardness, an anchor to the base model, and the attention of the top three layers held
# at the base's weights.
RECIPE_DIRECTIONS = ("query_to_doc", "query_to_query", "doc_to_query")
RECIPE_FREEZE = ("attn@-3",)
RECIPE_ANCHOR = 2.0
# MNRL's ranking options at sentence-transformers' own values: plain in-batch softmax over query_to_doc
_PLAIN_MNRL: dict[str, Any] = {"directions": ["query_to_doc"], "partition_mode": "joint", "hardness_mode": None,
                               "hardness_strength": 0.0}


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class IngestConfig(_Config):
    chunk_tokens: int = Field(200, ge=16, le=8192, description="target chunk length in tokens")
    overlap_tokens: int = Field(32, ge=0, description="tokens shared by consecutive chunks of one document")
    min_chunk_tokens: int = Field(8, ge=1, description="shorter trailing pieces are merged or dropped")
    max_file_mb: float = Field(20.0, gt=0, description="larger files are skipped and reported")
    tokenizer: str | None = Field(None, description="model whose tokenizer counts tokens (default: MiniLM)")
    extensions: list[str] = Field(
        default_factory=lambda: [".txt", ".md", ".markdown", ".rst", ".html", ".htm", ".pdf", ".docx",
                                 ".jsonl"])

    @model_validator(mode="after")
    def _overlap_below_size(self) -> IngestConfig:
        if self.overlap_tokens >= self.chunk_tokens:
            raise ValueError(f"overlap_tokens ({self.overlap_tokens}) must be smaller than chunk_tokens "
                             f"({self.chunk_tokens})")
        return self


class SplitConfig(_Config):
    train: float = Field(0.7, gt=0, lt=1)
    val: float = Field(0.1, ge=0, lt=1)
    test: float = Field(0.2, gt=0, lt=1)
    seed: int = 42

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitConfig:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions train+val+test must sum to 1, got {total:.3f}")
        return self


class GenerateConfig(_Config):
    method: Literal["auto", "ict", "crop", "llm"] = Field(
        "auto", description="auto = the LLM when one is configured, else inverse-cloze pseudo-queries")
    per_chunk: int = Field(2, ge=1, le=20, description="training queries per chunk")
    eval_per_chunk: int = Field(1, ge=1, le=5, description="evaluation queries per chunk (val/test splits)")
    val_distractors: int = Field(2000, ge=0, description="training chunks added to the validation corpus as "
                                                         "distractors, so validation ranks as a full index does "
                                                         "(0 = the validation chunks alone)")
    mask_prob: float = Field(0.9, ge=0, le=1, description="ICT: chance the query sentence is cut from the passage")
    crop_min_words: int = Field(8, ge=2)
    crop_max_words: int = Field(24, ge=2)
    seed: int = 42


class EmbeddingTrainConfig(_Config):
    base: str = Field("minilm", description="sentence-transformers name or path; 'minilm' = packaged MiniLM")
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimiser steps")
    batch_size: int = Field(64, ge=2)
    learning_rate: float = Field(1e-4, gt=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    max_seq_length: int = Field(256, ge=16)
    gradient_checkpointing: bool = Field(False, description="recompute each layer's activations in the backward "
                                         "pass instead of keeping them: far less memory for long texts or big "
                                         "batches, more compute per step")
    scale: float = Field(20.0, gt=0, description="MNRL similarity scale")
    checkpoint_every_s: float | None = Field(60.0, gt=0, description="checkpoint interval in seconds, for resume")
    save_steps: int | None = Field(None, ge=1, description="also checkpoint every this many steps")
    seed: int = 42
    # --- recipe (issue 4) ---
    loss: Literal["mnrl", "cached-mnrl", "margin-mse", "kl"] = Field(
        "mnrl", description="mnrl | cached-mnrl (GradCache, big batches) | margin-mse / kl (distil a teacher)")
    negatives: int = Field(1, ge=0, le=64, description="mined hard negatives per query (0 = in-batch only)")
    directions: list[Direction] = Field(list(RECIPE_DIRECTIONS), min_length=1, description="mnrl / cached-mnrl: "
                                        "which similarities the softmax ranks (query_to_doc always; "
                                        "doc_to_query makes it symmetric; query_to_query / doc_to_doc under one "
                                        "softmax give GTE's improved contrastive loss)")
    partition_mode: Literal["joint", "per_direction"] = Field("joint", description="mnrl / cached-mnrl with "
                                                              "several directions: one softmax over all, or one "
                                                              "per direction, averaged")
    hardness_mode: HardnessMode | None = Field("hard_negatives", description="mnrl / cached-mnrl: raise these "
                                               "negatives' logits by hardness_strength x their cosine, so harder "
                                               "ones weigh more (None = off; the default hard_negatives needs "
                                               "negatives >= 1 and is left out without them)")
    hardness_strength: float = Field(5.0, ge=0, description="alpha of hardness_mode (Lan et al. use 9 for "
                                                            "in_batch_negatives, EmbeddingGemma 5 for "
                                                            "hard_negatives)")
    mine_with: Literal["dense", "bm25", "both"] = Field("dense", description="miner: the base model, BM25, both")
    mine_range_min: int = Field(0, ge=0, description="skip the best N non-positive candidates")
    mine_range_max: int = Field(30, ge=1, description="look at candidates up to this rank")
    mine_sampling: Literal["top", "random"] = Field("top", description="keep the hardest survivors, or a sample")
    absolute_margin: float | None = Field(None, ge=0, description="drop candidates scoring > positive - margin")
    relative_margin: float | None = Field(0.05, ge=0, lt=1, description="drop candidates scoring > positive - "
                                                                        "|positive| * margin")
    teacher: Any = Field(None, description="cross-encoder teacher: CrossEncoder dir/name, 'msmarco-onnx', an .onnx "
                                           "path, or an object with predict(pairs, batch_size)")
    teacher_max_length: int = Field(512, ge=16, description="tokens per (query, passage) pair for the teacher")
    teacher_batch_size: int = Field(128, ge=1, description="pairs per teacher forward pass")
    teacher_margin: float | None = Field(None, description="drop mined candidates the teacher scores above "
                                                           "teacher(positive) - margin (None = no teacher guard)")
    teacher_candidates: int | None = Field(None, ge=1, description="candidates per query the teacher rescores "
                                                                   "[2 * negatives + 2]")
    teacher_temperature: float = Field(1.0, gt=0, description="teacher scores are divided by this for distillation")
    matryoshka_dims: list[int] | None = Field(None, description="also train truncated embeddings of these sizes")
    mini_batch_size: int = Field(32, ge=1, description="cached-mnrl: examples per forward pass")
    freeze_upper_layers: int = Field(0, ge=0, description="leave the top N transformer layers (and the heads above "
                                                          "them) as the base has them; forgetting sits mostly there")
    freeze_modules: list[str] = Field(default_factory=lambda: list(RECIPE_FREEZE), description="KIND@K specs "
                                      "(KIND attn, ffn or norm): that sub-layer of every transformer layer from K "
                                      "up keeps the base's weights, e.g. ['attn@3']; a negative K counts from the "
                                      "top ('attn@-3': the top three layers, or all of them in a smaller model). "
                                      "The default is left out, with a warning, for a model whose weight names "
                                      "ragtune cannot sort into sub-layers")
    layer_lr_decay: float = Field(1.0, gt=0, le=1, description="layer i from the bottom trains at learning_rate x "
                                                              "this^(i+1), the embeddings at learning_rate (1 = "
                                                              "one rate for all)")
    lora_rank: int | None = Field(None, ge=1, le=512, description="train rank-r LoRA adapters (peft) on the "
                                                                  "encoder's linear layers instead of every weight; "
                                                                  "merged into plain weights when written")
    lora_alpha: float | None = Field(None, gt=0, description="LoRA scale numerator (scale alpha / rank) [2 x rank]")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the LoRA path")
    lora_targets: list[str] | None = Field(None, min_length=1, description="module names (or name ends) that get "
                                                                          "adapters [every linear layer]")
    anchor_weight: float = Field(RECIPE_ANCHOR, ge=0, description="learning without forgetting: add this x the "
                                 "mean cosine distance of the batch's embeddings from a frozen base copy's (0 = "
                                 "off; the default is left out for cached-mnrl and matryoshka_dims, which it "
                                 "does not work with)")
    anchor_texts: AnchorTexts = Field("passages", description="which texts the anchor holds: the "
                                      "passage columns, or the queries too")
    evals_per_epoch: int = Field(4, ge=1, description="validation evaluations per epoch (with a validation set)")
    patience: int | None = Field(3, ge=1, description="stop after this many evaluations without a better val "
                                                      "nDCG@10 (None = never stop early)")
    small_set_steps: int = Field(50, ge=0, description="with epochs and learning_rate at their defaults, a set "
                                 "whose epochs take fewer steps than this trains for enough epochs to make at "
                                 "least this many, at half the learning rate, and the last step is written: "
                                 "validation, once per epoch, is logged but neither chooses the model nor stops "
                                 "training (0 = off)")

    @field_validator("teacher")
    @classmethod
    def _teacher_spec(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and value.strip()):
            return value
        if isinstance(value, Path):
            return str(value)
        if callable(getattr(value, "predict", None)):
            return value
        raise ValueError("teacher must be a spec string (a CrossEncoder directory or name, 'msmarco-onnx', an .onnx "
                         "path) or an object with predict(pairs, batch_size)")

    @field_serializer("teacher")
    def _teacher_name(self, value: Any) -> str | None:
        from ragtune.teacher import teacher_name

        return value if value is None or isinstance(value, str) else teacher_name(value) or type(value).__name__

    @field_validator("matryoshka_dims")
    @classmethod
    def _dims(cls, value: list[int] | None) -> list[int] | None:
        if value is None:
            return None
        if not value or any(d < 1 for d in value) or len(set(value)) != len(value):
            raise ValueError("matryoshka_dims must be distinct positive sizes, e.g. [384, 256, 128, 64]")
        return sorted(value, reverse=True)

    @field_validator("freeze_modules")
    @classmethod
    def _module_specs(cls, value: list[str]) -> list[str]:
        from ragtune.train.mixing import parse_module_spec

        for spec in value:
            parse_module_spec(spec)
        return value

    @model_validator(mode="after")
    def _recipe(self) -> EmbeddingTrainConfig:
        distil = self.loss in ("margin-mse", "kl")
        if distil and self.teacher is None:
            raise ValueError(f"loss={self.loss!r} distils a cross-encoder: set teacher (e.g. 'msmarco-onnx' or a "
                             "CrossEncoder directory), or use loss='mnrl'")
        if distil and self.negatives < 1:
            raise ValueError(f"loss={self.loss!r} needs negatives >= 1 (the teacher scores the query with its "
                             "positive and its mined negatives); set negatives, e.g. 4")
        if self.teacher_margin is not None and self.teacher is None:
            raise ValueError("teacher_margin is set but teacher is not: set teacher, or teacher_margin: null")
        if self.teacher is not None and not distil and (self.negatives < 1 or self.teacher_margin is None):
            raise ValueError(f"teacher with loss={self.loss!r} is only used to drop false negatives among mined "
                             "ones: set negatives >= 1 and teacher_margin (e.g. 0.0), use loss='margin-mse' or "
                             "'kl', or remove teacher")
        self._ranking_options()
        lora_options = [k for k in ("lora_alpha", "lora_targets") if getattr(self, k) is not None]
        if self.lora_rank is None and (lora_options or self.lora_dropout):
            raise ValueError(f"{', '.join(lora_options) or 'lora_dropout'} is set but lora_rank is not: set lora_rank "
                             "(e.g. 16) to train LoRA adapters, or drop the LoRA options")
        if self.anchor_weight not in (0, RECIPE_ANCHOR) and (self.loss == "cached-mnrl" or self.matryoshka_dims):
            raise ValueError(f"anchor_weight works with loss mnrl, margin-mse or kl and without matryoshka_dims; "
                             f"it is {self.anchor_weight} with loss={self.loss!r}"
                             f"{' and matryoshka_dims' if self.matryoshka_dims else ''}: drop one of them")
        if self.anchor_weight == 0 and self.anchor_texts != "passages":
            raise ValueError(f"anchor_texts={self.anchor_texts!r} is set but anchor_weight is 0: set anchor_weight "
                             "(e.g. 1.0) to keep the embeddings near the base's, or drop anchor_texts")
        if self.mine_range_min >= self.mine_range_max:
            raise ValueError(f"mine_range_min ({self.mine_range_min}) must be smaller than mine_range_max "
                             f"({self.mine_range_max})")
        if self.negatives > self.mine_range_max - self.mine_range_min:
            raise ValueError(f"negatives ({self.negatives}) exceeds the candidate window mine_range_max - "
                             f"mine_range_min ({self.mine_range_max - self.mine_range_min}); raise mine_range_max")
        return self

    @property
    def anchor_in_use(self) -> float:
        """The anchor weight training uses: ``anchor_weight``, or 0 where the default weight meets a loss it does not
        work with (cached-mnrl, Matryoshka)."""
        return 0.0 if self.loss == "cached-mnrl" or self.matryoshka_dims else self.anchor_weight

    def changed_ranking_options(self) -> list[str]:
        """The MNRL-only options (directions, partition_mode, hardness_mode, hardness_strength) set to something
        other than their defaults and than plain MNRL's values, i.e. asked for on purpose."""
        fields = type(self).model_fields
        return [k for k in _PLAIN_MNRL if getattr(self, k) not in (fields[k].get_default(call_default_factory=True),
                                                                   _PLAIN_MNRL[k])]

    def ranking_options(self) -> dict[str, Any]:
        """The MNRL options this config trains with that differ from plain MNRL's (so an older sentence-transformers
        without them is only asked for them when they are in use): the directions with their partition mode, and
        the hardness weighting unless it weighs mined negatives and there are none."""
        options: dict[str, Any] = {}
        if list(self.directions) != _PLAIN_MNRL["directions"] or self.partition_mode != "joint":
            options.update(directions=tuple(self.directions), partition_mode=self.partition_mode)
        if self.hardness_mode is not None and (self.hardness_mode != "hard_negatives" or self.negatives > 0):
            options.update(hardness_mode=self.hardness_mode, hardness_strength=self.hardness_strength)
        return options

    def _ranking_options(self) -> None:
        """The MNRL-only options checked against each other and the loss."""
        changed = self.changed_ranking_options()
        if changed and self.loss not in ("mnrl", "cached-mnrl"):
            raise ValueError(f"{', '.join(changed)} shape the MNRL loss but loss={self.loss!r}: use loss='mnrl' or "
                             "'cached-mnrl', or drop them")
        if "query_to_doc" not in self.directions or len(set(self.directions)) != len(self.directions):
            raise ValueError(f"directions={self.directions}: list each direction once and include 'query_to_doc' "
                             "(the query's own passage is the positive), e.g. ['query_to_doc', 'doc_to_query']")
        pairwise = sorted(set(self.directions) & {"query_to_query", "doc_to_doc"})
        if self.partition_mode == "per_direction" and pairwise:
            raise ValueError(f"partition_mode='per_direction' cannot rank {', '.join(pairwise)} (they have no "
                             "positive of their own): use partition_mode='joint', or drop them")
        if self.hardness_mode == "hard_negatives" and self.negatives == 0 and "hardness_strength" in changed:
            raise ValueError("hardness_mode='hard_negatives' weighs the mined negatives, but negatives=0: set "
                             "negatives >= 1, or use hardness_mode='in_batch_negatives'")
        if (self.hardness_mode is None) != (self.hardness_strength == 0) and (
                self.hardness_mode is not None or "hardness_strength" in changed):
            raise ValueError(f"hardness_mode={self.hardness_mode!r} with hardness_strength={self.hardness_strength}: "
                             "set both (e.g. 'hard_negatives' and 5.0), or hardness_mode None to weigh no "
                             "negative more")


class EvalConfig(_Config):
    bootstrap: int = Field(1000, ge=0, description="bootstrap resamples for 95% CIs (0 = none)")
    batch_size: int = Field(64, ge=1)
    block_size: int = Field(50_000, ge=1000, description="corpus block size for streamed dense search")
    top_k: int = Field(100, ge=10)
    rerank_k: int | None = Field(None, ge=1, description="first-stage candidates a reranker rescores in `ragtune "
                                                         "run` (default: top_k with a GPU, 20 without one)")
    seed: int = 42


from ragtune.adapters.config import AdapterConfig  # noqa: E402  (these build on _Config above)
from ragtune.generate.llm.config import LLMConfig  # noqa: E402
from ragtune.train.guard import GuardConfig  # noqa: E402
from ragtune.train.reranker import RerankerTrainConfig  # noqa: E402


class RunConfig(_Config):
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    embedding: EmbeddingTrainConfig = Field(default_factory=EmbeddingTrainConfig)
    guard: GuardConfig = Field(default_factory=GuardConfig)
    reranker: RerankerTrainConfig | None = Field(default_factory=RerankerTrainConfig,
                                                 description="cross-encoder reranker step (null = skip it)")
    adapter: AdapterConfig | None = Field(None, description="also train a query-side adapter on the frozen base")
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
        """Defaults, then ``path`` (YAML), then ``overrides`` (dotted keys such as ``embedding.epochs``)."""
        import yaml

        data: dict[str, Any] = {}
        if path is not None:
            p = Path(path)
            if not p.is_file():
                raise ConfigError(f"--config {p}: file not found")
            try:
                data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
            except yaml.YAMLError as exc:
                raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
            if not isinstance(data, dict):
                raise ConfigError(f"{p}: expected a mapping of sections (ingest, split, ...), "
                                  f"got {type(data).__name__}")
        for dotted, value in (overrides or {}).items():
            if value is None:
                continue
            node = data
            *parents, leaf = dotted.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        return validate_config(cls, data, source=str(path) if path else "configuration")

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def validate_config(cls: type[BaseModel], data: dict[str, Any], source: str = "configuration"):
    """Build ``cls`` from ``data``; turn pydantic's error into a :class:`ConfigError` naming each bad key."""
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "(top level)"
            lines.append(f"  {key}: {err['msg']} (got {err.get('input')!r})")
        raise ConfigError(f"{source} is invalid:\n" + "\n".join(lines)) from None
