"""Adapter kinds, the registry, files, and the sentence-transformers export (exact, loads without ragtune code)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ragtune.adapters import (
    Adapter,
    available_adapters,
    build_adapter,
    load_adapter,
    register_adapter,
    save_adapter,
)
from ragtune.adapters.export import export_sentence_transformer
from ragtune.errors import ConfigError, DataFormatError

TEXTS = ["how do plants make glucose", "a volcano erupts when magma rises", "green tea leaves"]


def _perturbed(kind: str, dim: int, **params) -> Adapter:
    torch.manual_seed(0)
    adapter = build_adapter(kind, dim, **params)
    with torch.no_grad():
        for p in adapter.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return adapter.eval()


@pytest.mark.parametrize(("kind", "params"), [("linear", {}), ("linear", {"bias": False}), ("mlp", {}),
                                              ("mlp", {"hidden_dim": 8, "activation": "relu"})])
def test_adapters_start_as_the_identity(kind, params):
    adapter = build_adapter(kind, 12, **params)
    x = torch.randn(5, 12)
    assert torch.allclose(adapter(x), x)


def test_registry_names_aliases_and_errors():
    assert {"linear", "linear.v1", "mlp", "mlp.v1"} <= set(available_adapters())
    assert build_adapter("linear.v1", 4).kind == "linear.v1"
    with pytest.raises(ConfigError, match="'nope' is not registered. Known kinds: .*linear"):
        build_adapter("nope", 4)
    with pytest.raises(ConfigError, match="does not accept parameters"):
        build_adapter("linear", 4, depth=3)
    with pytest.raises(ConfigError, match="activation='swish'"):
        build_adapter("mlp", 4, activation="swish")
    with pytest.raises(ConfigError, match="already registered"):
        register_adapter("linear.v1")(type("Other", (Adapter,), {}))


@register_adapter("test-scale.v1")
class _Scale(Adapter):
    def __init__(self, dim: int, init: float = 1.0):
        super().__init__(dim, init=init)
        self.scale = torch.nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, x):
        return x * self.scale


def test_save_and_load_round_trip(tmp_path):
    for kind in ("linear", "mlp", "test-scale.v1"):
        adapter = _perturbed(kind, 6)
        save_adapter(adapter, tmp_path / kind, extra={"side": "query"})
        loaded, cfg = load_adapter(tmp_path / kind)
        x = torch.randn(3, 6)
        assert torch.allclose(loaded(x), adapter(x)) and cfg["side"] == "query"
    cfg_path = tmp_path / "linear" / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["dim"] = 7
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(DataFormatError, match="do not fit a linear.v1 adapter of dim 7"):
        load_adapter(tmp_path / "linear")
    with pytest.raises(DataFormatError, match="no adapter_config.json"):
        load_adapter(tmp_path)


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_st_export_query_side_is_exact_and_leaves_documents_alone(kind, tiny_model_path, tmp_path):
    from sentence_transformers import SentenceTransformer

    base = SentenceTransformer(tiny_model_path, device="cpu")
    adapter = _perturbed(kind, base.get_embedding_dimension())
    export_sentence_transformer(adapter, base, tmp_path / "m", side="query")
    modules = json.loads((tmp_path / "m" / "modules.json").read_text())
    assert [m["type"] for m in modules] == ["sentence_transformers.base.modules.router.Router"]
    loaded = SentenceTransformer(str(tmp_path / "m"), device="cpu")  # plain load: no trust_remote_code
    b = base.encode(TEXTS, normalize_embeddings=True)
    with torch.no_grad():
        expected = torch.nn.functional.normalize(adapter(torch.from_numpy(b)), dim=-1).numpy()
    np.testing.assert_allclose(loaded.encode_query(TEXTS), expected, atol=1e-5)
    np.testing.assert_allclose(loaded.encode_document(TEXTS), b, atol=1e-5)
    np.testing.assert_allclose(loaded.encode(TEXTS), b, atol=1e-5)  # default route: document


def test_st_export_both_sides_and_custom_module(tiny_model_path, tmp_path):
    from sentence_transformers import SentenceTransformer

    base = SentenceTransformer(tiny_model_path, device="cpu")
    dim = base.get_embedding_dimension()
    b = base.encode(TEXTS, normalize_embeddings=True)
    adapter = _perturbed("linear", dim)
    export_sentence_transformer(adapter, base, tmp_path / "both", side="both")
    with torch.no_grad():
        expected = torch.nn.functional.normalize(adapter(torch.from_numpy(b)), dim=-1).numpy()
    both = SentenceTransformer(str(tmp_path / "both"), device="cpu")
    np.testing.assert_allclose(both.encode_document(TEXTS), expected, atol=1e-5)

    custom = _perturbed("test-scale.v1", dim)
    export_sentence_transformer(custom, base, tmp_path / "custom", side="query")
    with pytest.raises(ValueError, match="trust_remote_code"):  # sentence-transformers >= 6 policy
        SentenceTransformer(str(tmp_path / "custom"), device="cpu")
    loaded = SentenceTransformer(str(tmp_path / "custom"), device="cpu", trust_remote_code=True)
    with torch.no_grad():
        expected = torch.nn.functional.normalize(custom(torch.from_numpy(b)), dim=-1).numpy()
    np.testing.assert_allclose(loaded.encode_query(TEXTS), expected, atol=1e-5)


def test_st_export_rejects_a_dimension_mismatch(tiny_model_path, tmp_path):
    from sentence_transformers import SentenceTransformer

    base = SentenceTransformer(tiny_model_path, device="cpu")
    with pytest.raises(ConfigError, match="dimension mismatch: the base model gives 32-d embeddings, the "
                                          "adapter expects 8-d"):
        export_sentence_transformer(build_adapter("linear", 8), base, tmp_path / "x")
