"""Forgetting guard: the packaged check set, weight interpolation, and the keep / mix / fall-back decision."""

from __future__ import annotations

import ast
import copy
import fnmatch
import json
import logging
import re
from collections import Counter
from pathlib import Path

import pytest

from ragtune.data.beir import BeirDataset, load_beir
from ragtune.data.checkset import load_checkset
from ragtune.errors import ConfigError
from ragtune.lang import detect_language
from ragtune.train import guard as guard_mod
from ragtune.train import mixing
from ragtune.train.guard import GuardConfig, guard_model, interpolate_weights

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[2]


def _state(path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path), device="cpu").state_dict()


def _moved_share(model, key: str, base_sd: dict, ft_sd: dict) -> float:
    """Where ``model`` sits between base (0) and fine-tuned (1) on a few entries of weight ``key``."""
    moved = model.state_dict()[key][0, :4] - base_sd[key][0, :4]
    return float((moved / (ft_sd[key] - base_sd[key])[0, :4]).mean())


def _nudged(path: str):
    """The loaded model at ``path`` and a copy in which every weight moved a little (norms and biases too)."""
    import torch

    base_model = mixing._load(path, "cpu")
    ft_model = copy.deepcopy(base_model)
    with torch.no_grad():
        for p in ft_model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return base_model, ft_model


def _perturbed(src: str, dst: Path, scale: float, seed: int = 0) -> str:
    """A copy of ``src`` with Gaussian noise (``scale`` x each tensor's std) added to every float weight."""
    import torch
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(seed)
    model = SentenceTransformer(src, device="cpu")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * (p.std() if p.numel() > 1 else 1.0) * scale)
    model.save(str(dst))
    return str(dst)



@pytest.fixture(scope="module")
def minilm(minilm_path):
    """The packaged MiniLM, loaded once for this module (guard_model takes loaded models too)."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(minilm_path, device="cpu")


@pytest.fixture(scope="module")
def noisy_minilm(minilm):
    """MiniLM with heavy Gaussian noise on every weight: a clearly damaged "fine-tuned" model."""
    import copy

    import torch

    torch.manual_seed(0)
    model = copy.deepcopy(minilm)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * (p.std() if p.numel() > 1 else 1.0) * 3.0)
    return model


@pytest.fixture(scope="module")
def general_small() -> BeirDataset:
    """Two clusters of the English check set (16 passages): enough signal, fast to encode."""
    full = load_checkset("en")
    keep = {d for d, doc in full.corpus.items() if doc["cluster"] in ("river", "weather")}
    qrels = {q: r for q, r in full.qrels.items() if set(r) <= keep}
    return BeirDataset({d: full.corpus[d] for d in keep}, {q: full.queries[q] for q in qrels}, qrels,
                       name="checkset-small")


# --- the check set -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("language", "size", "clusters", "per_cluster"), [("en", 472, 60, (5, 8)),
                                                                          ("zh", 139, 24, (4, 6))])
def test_checkset_is_consistent(language, size, clusters, per_cluster):
    ds = load_checkset(language)
    assert ds.name == f"ragtune-checkset-{language}" and not ds.issues
    assert len(ds.corpus) == len(ds.queries) == len(ds.qrels) == size
    judged = Counter(d for docs in ds.qrels.values() for d in docs)
    assert set(judged) == set(ds.corpus) and set(judged.values()) == {1}  # every passage: exactly one query
    assert all(list(docs.values()) == [1] for docs in ds.qrels.values())
    assert set(ds.qrels) == set(ds.queries)
    sizes = Counter(doc["cluster"] for doc in ds.corpus.values())
    assert len(sizes) == clusters and per_cluster[0] <= min(sizes.values()) <= max(sizes.values()) == per_cluster[1]
    titles = Counter(doc["title"].casefold() for doc in ds.corpus.values())
    assert max(titles.values()) == 1  # no topic twice: its query would have two right answers
    for qid, docs in ds.qrels.items():  # a query belongs to its passage's cluster
        assert qid == f"q-{next(iter(docs))}"
    texts = [doc["text"] for doc in ds.corpus.values()] + list(ds.queries.values())
    assert detect_language(texts, sample=len(texts)) == language
    assert len(set(ds.queries.values())) == len(ds.queries)  # no duplicated query text


def test_checkset_rejects_unknown_language_and_is_package_data():
    with pytest.raises(ConfigError, match="language='fr'"):
        load_checkset("fr")
    # (tomllib needs Python 3.11; this TOML line is also a Python list literal)
    line = re.search(r"\[tool\.setuptools\.package-data\]\s*\nragtune\s*=\s*(\[.*?\])",
                     (REPO / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = ast.literal_eval(line.group(1))
    pkg = REPO / "src" / "ragtune"
    files = [p.relative_to(pkg).as_posix() for p in (pkg / "data" / "checkset").rglob("*")
             if p.is_file() and p.suffix != ".py" and "__pycache__" not in p.parts]
    assert len(files) == 7  # README + 3 files per language
    for rel in files:  # a wheel built from pyproject.toml ships every data file
        assert any(fnmatch.fnmatch(rel, pat) for pat in patterns), rel


# --- configuration -------------------------------------------------------------------------------------------


def test_guard_config_validates():
    cfg = GuardConfig(alphas=[0.75, 0.25, 0.25], check_set=" ZH ")
    assert cfg.alphas == [0.25, 0.75] and cfg.check_set == "zh" and cfg.min_val_gain == 0.0
    assert cfg.sparse_mixes == [] and GuardConfig(sparse_mixes=[0.5, 0.2]).sparse_mixes == [0.2, 0.5]
    assert cfg.module_mixes == ["attn", "ffn"] and GuardConfig(module_mixes=[]).module_mixes == []
    assert cfg.prefer == "most_kept"
    for bad in ({"alphas": [0.0]}, {"alphas": [1.0]}, {"metric": "ndcg@11"}, {"max_general_drop": -0.1},
                {"check_set": " "}, {"typo": 1}, {"sparse_mixes": [1.0]}, {"sparse_mixes": [0]},
                {"module_mixes": ["mlp"]}, {"prefer": "test"}):
        with pytest.raises(ValueError):
            GuardConfig(**bad)
    with pytest.raises(ConfigError, match="check_set='/no/such/dir'"):
        guard_mod.general_check_set(GuardConfig(check_set="/no/such/dir"), load_checkset("en"))


def test_auto_check_set_follows_the_validation_language(toy_beir):
    zh_val = load_checkset("zh")
    assert guard_mod.general_check_set(GuardConfig(), zh_val)[1] == "ragtune-checkset-zh"
    assert guard_mod.general_check_set(GuardConfig(), load_beir(toy_beir))[1] == "ragtune-checkset-en"
    assert guard_mod.general_check_set(GuardConfig(check_set=str(toy_beir)), zh_val)[0].name == "toy"


# --- weight mixes (ragtune.train.mixing) ---------------------------------------------------------------------


def test_lower_layer_mix_takes_fine_tuned_weights_below_k(tiny_model_path, tmp_path):
    import torch

    from ragtune.train.mixing import _mix_lower_layers, count_layers

    base_model, ft_model = _nudged(tiny_model_path)
    assert count_layers(base_model) == 2
    base_sd, ft_sd = base_model.state_dict(), ft_model.state_dict()
    got = _mix_lower_layers(base_model, ft_model, 1).state_dict()
    assert got.keys() == ft_sd.keys()
    for key in got:
        from_ft = ".embeddings." in key or ".layer.0." in key
        assert torch.equal(got[key], (ft_sd if from_ft else base_sd)[key]), key
        if torch.is_floating_point(got[key]):
            assert not torch.equal(base_sd[key], ft_sd[key]), key  # so the check above can fail
    assert any(".layer.1." in k for k in got) and any("pooler" in k for k in got)  # the heads above stay the base's
    for bad in (0, 2):
        with pytest.raises(ConfigError, match=f"k={bad}: must be between 1 and 1"):
            _mix_lower_layers(base_model, ft_model, bad)


@pytest.mark.parametrize("key, kind", [
    ("0.auto_model.encoder.layer.3.attention.self.query.weight", "attn"),
    ("0.auto_model.encoder.layer.3.attention.output.dense.bias", "attn"),
    ("0.auto_model.encoder.layer.3.attention.output.LayerNorm.weight", "norm"),
    ("0.auto_model.encoder.layer.3.intermediate.dense.weight", "ffn"),
    ("0.auto_model.encoder.layer.3.output.dense.weight", "ffn"),
    ("0.auto_model.encoder.layer.3.output.LayerNorm.bias", "norm"),
    ("0.auto_model.embeddings.word_embeddings.weight", None),
    ("0.auto_model.pooler.dense.weight", None),
    ("0.auto_model.embeddings.LayerNorm.weight", None),
    ("0.auto_model.layers.2.self_attn.o_proj.weight", "attn"),  # Llama / Qwen naming
    ("0.auto_model.layers.2.mlp.down_proj.weight", "ffn"),
    ("0.auto_model.layers.2.post_attention_layernorm.weight", "norm"),
    ("0.auto_model.h.1.attn.c_attn.weight", "attn"),  # GPT-2 naming
    ("0.auto_model.h.1.mlp.c_fc.weight", "ffn"),
    ("0.auto_model.h.1.ln_1.weight", "norm"),
])
def test_sublayer_kind_reads_common_weight_names(key, kind):
    assert mixing.sublayer_kind(key) == kind


def test_module_mix_takes_base_weights_of_one_kind_from_layer_k(tiny_model_path, tmp_path):
    import torch

    from ragtune.train.mixing import _mix_modules, module_mix

    base_model, ft_model = _nudged(tiny_model_path)
    base_sd, ft_sd = base_model.state_dict(), ft_model.state_dict()
    for kind, k in (("attn", 1), ("ffn", 1), ("attn", 0)):
        got = _mix_modules(base_model, ft_model, kind, k).state_dict()
        assert got.keys() == ft_sd.keys()
        from_base = [key for key in got if mixing.sublayer_kind(key) == kind and mixing.layer_of(key) >= k]
        assert len(from_base) == (8 if kind == "attn" else 4) * (2 - k)  # q, k, v, output (+ biases); the FFN pair
        for key, t in got.items():
            assert torch.equal(t, (base_sd if key in from_base else ft_sd)[key]), (kind, k, key)
            if torch.is_floating_point(t):
                assert not torch.equal(base_sd[key], ft_sd[key]), key  # so the check above can fail
    # how much of the change each mix keeps, by weight distance: alpha for a uniform mix
    assert mixing.kept_change(base_model, mixing._mix(base_model, ft_model, 0.3), ft_model) == pytest.approx(0.3)
    assert mixing.kept_change(base_model, base_model, ft_model) == 0.0
    assert mixing.kept_change(base_model, ft_model, ft_model) == pytest.approx(1.0)
    assert mixing.kept_change(base_model, base_model, base_model) == 0.0  # nothing changed
    parts = [mixing.kept_change(base_model, _mix_modules(base_model, ft_model, kind, 1), ft_model) ** 2
             for kind in ("attn", "ffn", "norm")]
    assert all(0 < p < 1 for p in parts)
    out = module_mix(tiny_model_path, ft_model, "ffn", 1, tmp_path / "m")
    assert out == tmp_path / "m" and (out / "modules.json").is_file()
    for kind, k, match in (("mlp", 1, "choose one of attn, ffn, norm"), ("attn", 2, "k=2: must be between 0 and 1")):
        with pytest.raises(ConfigError, match=match):
            _mix_modules(base_model, ft_model, kind, k)


def test_module_mix_wins_when_forgetting_sits_in_the_upper_attention(tiny_model_path, toy_beir, tmp_path,
                                                                     monkeypatch):
    """Validation follows every fine-tuned weight; the check set only the upper layer's attention: the guard keeps
    the fine-tuned model with the base's attention from layer 1 up, which keeps the upper feed-forward gain too."""
    ft = _perturbed(tiny_model_path, tmp_path / "ft", scale=1.0)
    base_sd, ft_sd = _state(tiny_model_path), _state(ft)
    low = next(k for k in base_sd if k.endswith("word_embeddings.weight"))
    attn = next(k for k in base_sd if ".layer.1." in k and k.endswith("query.weight"))
    ffn = next(k for k in base_sd if ".layer.1." in k and k.endswith("intermediate.dense.weight"))

    def share(model, key):
        return _moved_share(model, key, base_sd, ft_sd)

    def fake_evaluate(model, dataset, batch_size):
        if dataset.name == "toy":
            return {"ndcg@10": 0.5 + 0.03 * (share(model, low) + share(model, attn) + share(model, ffn))}
        return {"ndcg@10": 0.8 - 0.05 * share(model, attn)}

    monkeypatch.setattr(guard_mod, "_evaluate", fake_evaluate)
    general = load_checkset("en")
    result = guard_model(tiny_model_path, ft, load_beir(toy_beir), tmp_path / "g", GuardConfig(measure_all=True),
                         general)
    # lower-layers=1 passes at 0.53, base-attn-from=1 at 0.56; base-ffn-from=1 keeps the upper attention and fails
    assert result.decision == "interpolated" and result.module == "attn@1" and result.candidate == "base-attn-from=1"
    assert result.alpha is None and result.layers is None and result.to_dict()["module"] == "attn@1"
    assert result.to_dict()["val_chosen"] == pytest.approx(0.56) and result.score("lower-layers=1", "val") < 0.56
    assert result.score("base-ffn-from=1", "general") < 0.8 - 0.005
    assert "base model's attention weights in transformer layers 1 and up" in result.message
    assert result.kept["base-attn-from=1"] > result.kept["lower-layers=1"] > 0.1
    assert result.to_dict()["kept_chosen"] == result.kept["base-attn-from=1"]
    assert f"it keeps {result.kept['base-attn-from=1']:.0%} of the fine-tuning change" in result.message
    got = _state(result.model_dir)
    assert got[attn].equal(base_sd[attn]) and got[ffn].equal(ft_sd[ffn]) and got[low].equal(ft_sd[low])
    # the default search goes from the most change kept down: base-ffn-from=1 (the larger weights) fails the check
    # set and is not scored on validation, base-attn-from=1 passes, and the mixes keeping less are never scored
    quick = guard_model(tiny_model_path, ft, load_beir(toy_beir), tmp_path / "gq", general=general)
    assert quick.candidate == "base-attn-from=1" and set(quick.scores["base-ffn-from=1"]) == {"general"}
    assert set(quick.scores) == {"base", "fine-tuned", "base-ffn-from=1", "base-attn-from=1"}
    res = guard_model(tiny_model_path, ft, load_beir(toy_beir), tmp_path / "g2", GuardConfig(module_mixes=[]),
                      general)
    assert res.candidate == "lower-layers=1" and not any(k.startswith("base-") for k in res.scores)
    res = guard_model(tiny_model_path, ft, load_beir(toy_beir), tmp_path / "g3", GuardConfig(min_val_gain=0.5),
                      general)
    assert res.decision == "base" and "the module mixes" in res.message

    # validation slightly prefers the base's upper feed-forward weights (as noise can): the default still keeps the
    # mix that keeps more of the change; prefer="validation" keeps the layer mix
    def noisy_validation(model, dataset, batch_size):
        if dataset.name == "toy":
            return {"ndcg@10": 0.5 + 0.06 * share(model, low) - 0.01 * share(model, ffn)}
        return fake_evaluate(model, dataset, batch_size)

    monkeypatch.setattr(guard_mod, "_evaluate", noisy_validation)
    res = guard_model(tiny_model_path, ft, load_beir(toy_beir), tmp_path / "g4", GuardConfig(measure_all=True),
                      general)
    assert res.candidate == "base-attn-from=1" and res.score("lower-layers=1", "val") > res.score(res.candidate, "val")
    res = guard_model(tiny_model_path, ft, load_beir(toy_beir), tmp_path / "g5", GuardConfig(prefer="validation"),
                      general)
    assert res.candidate == "lower-layers=1"


def test_sparse_mix_keeps_the_largest_changes_of_each_weight(tiny_model_path, tmp_path):
    import torch

    from ragtune.train.mixing import _sparse_mix, sparse_mix

    base_model, ft_model = _nudged(tiny_model_path)
    base_sd, ft_sd = base_model.state_dict(), ft_model.state_dict()
    got = _sparse_mix(base_model, ft_model, 0.2).state_dict()
    assert got.keys() == ft_sd.keys()
    checked = 0
    for key, t in got.items():
        if not torch.is_floating_point(t):
            assert torch.equal(t, ft_sd[key]), key
            continue
        change = (ft_sd[key] - base_sd[key]).abs()
        from_ft = t == ft_sd[key]
        assert torch.equal(torch.where(from_ft, ft_sd[key], base_sd[key]), t), key  # each entry from one model
        n = change.numel()
        if n >= 10:  # 20 % of the entries, and exactly the ones that moved most
            assert int(from_ft.sum()) == round(0.2 * n), key
            assert change[from_ft].min() >= change[~from_ft].max(), key
            checked += 1
    assert checked > 10
    assert torch.equal(_sparse_mix(base_model, ft_model, 1.0).state_dict()[key], ft_sd[key])
    out = sparse_mix(tiny_model_path, ft_model, 0.5, tmp_path / "s")
    assert out == tmp_path / "s" and (out / "modules.json").is_file()
    for bad in (0.0, 1.5):
        with pytest.raises(ConfigError, match="share of each weight's changes"):
            _sparse_mix(base_model, ft_model, bad)


def test_sparse_mix_wins_when_only_the_small_changes_cost_the_check_set(tiny_model_path, toy_beir, tmp_path,
                                                                        monkeypatch):
    """Validation follows the entries that moved most, the check set those that moved least: the guard keeps a
    sparse mix, which no uniform or layer mix can match."""
    import torch

    base_model = mixing._load(tiny_model_path, "cpu")
    ft_model = copy.deepcopy(base_model)
    key = next(k for k, _ in ft_model.named_parameters() if k.endswith("word_embeddings.weight"))
    with torch.no_grad():
        dict(ft_model.named_parameters())[key].add_(torch.linspace(0.001, 0.1, 100).repeat(10_000)[
            : dict(ft_model.named_parameters())[key].numel()].view_as(dict(ft_model.named_parameters())[key]))
    ft_model.save(str(tmp_path / "ft"))
    b, f = base_model.state_dict()[key], ft_model.state_dict()[key]
    big, small = (f - b).abs() > 0.09, (f - b).abs() < 0.06  # the top tenth of the changes; the lower 59 %

    def fake_evaluate(model, dataset, batch_size):
        w = model.state_dict()[key]
        moved = ((w - b) / (f - b)).clamp(0, 1)
        if dataset.name == "toy":  # validation: the share of the largest changes taken
            return {"ndcg@10": 0.5 + 0.1 * float(moved[big].mean())}
        return {"ndcg@10": 0.8 - 0.05 * float(moved[small].mean())}  # check set: the small changes cost

    monkeypatch.setattr(guard_mod, "_evaluate", fake_evaluate)
    result = guard_model(tiny_model_path, str(tmp_path / "ft"), load_beir(toy_beir), tmp_path / "g",
                         GuardConfig(sparse_mixes=[0.1, 0.2, 0.3, 0.5], measure_all=True), load_checkset("en"))
    # keeps 0.1, 0.2 and 0.3 take all of the largest changes and none of the small ones: the tie goes to 0.3;
    # 0.5 takes some small ones (0.051 ... 0.059) and fails the check set; uniform mixes above 0.1 fail it too
    assert result.decision == "interpolated" and result.keep == 0.3 and result.candidate == "sparse=0.3"
    assert result.alpha is None and result.layers is None and result.to_dict()["keep"] == 0.3
    assert "sparse mix" in result.message and "largest 30% of each weight's changes" in result.message
    assert result.to_dict()["val_chosen"] == pytest.approx(0.6)
    assert result.score("sparse=0.5", "general") < 0.8 - 0.005 and result.score("alpha=0.2", "general") < 0.795
    assert "lower-layers=1" not in result.scores  # only the embeddings moved: a layer mix is the fine-tuned model
    got = _state(result.model_dir)[key]
    assert torch.equal(got[big], f[big]) and torch.equal(got[small], b[small])
    quick = guard_model(tiny_model_path, str(tmp_path / "ft"), load_beir(toy_beir), tmp_path / "gq",
                        GuardConfig(sparse_mixes=[0.1, 0.2, 0.3, 0.5]), load_checkset("en"))
    assert quick.candidate == "sparse=0.3" and "sparse=0.1" not in quick.scores  # 0.1 keeps less: never scored
    res = guard_model(tiny_model_path, str(tmp_path / "ft"), load_beir(toy_beir), tmp_path / "g2",
                      general=load_checkset("en"))  # the default tries none
    assert res.keep is None and not any(k.startswith("sparse=") for k in res.scores)


def test_layer_mix_wins_when_it_keeps_more_of_the_gain(tiny_model_path, toy_beir, tmp_path, monkeypatch):
    """Validation follows the fine-tuned share of every weight; the check set only the share of the upper layer, as
    when forgetting sits in the upper layers: the layer mix keeps the lower layer's gain at no cost."""
    ft = _perturbed(tiny_model_path, tmp_path / "ft", scale=1.0)
    base_sd, ft_sd = _state(tiny_model_path), _state(ft)
    low = next(k for k in base_sd if k.endswith("word_embeddings.weight"))
    # the whole upper layer forgets: its attention and its feed-forward block alike
    highs = [next(k for k in base_sd if ".layer.1." in k and k.endswith(end))
             for end in ("query.weight", "intermediate.dense.weight")]

    def share(model, key):
        return _moved_share(model, key, base_sd, ft_sd)

    def fake_evaluate(model, dataset, batch_size):
        lo, hi = share(model, low), sum(share(model, high) for high in highs) / 2
        return {"ndcg@10": 0.5 + 0.06 * lo + 0.04 * hi if dataset.name == "toy" else 0.8 - 0.05 * hi}

    monkeypatch.setattr(guard_mod, "_evaluate", fake_evaluate)
    general = load_checkset("en")
    result = guard_model(tiny_model_path, ft, load_beir(toy_beir), tmp_path / "g", general=general)
    assert result.decision == "interpolated" and result.alpha is None and result.layers == 1
    assert result.candidate == "lower-layers=1" and result.to_dict()["layers"] == 1
    assert "lowest 1 transformer layers" in result.message and result.to_dict()["val_chosen"] == pytest.approx(0.56)
    got = _state(result.model_dir)
    assert got[low].equal(ft_sd[low]) and all(got[high].equal(base_sd[high]) for high in highs)
    assert result.score("base-attn-from=1", "general") < 0.8 - 0.005  # half the upper layer still forgets
    # without layer mixes the best uniform mix is kept (alpha 0.1: the check set allows a tenth of the upper layer)
    res = guard_model(tiny_model_path, ft, load_beir(toy_beir), tmp_path / "g2", GuardConfig(layer_mixes=False),
                      general)
    assert res.alpha == 0.1 and res.layers is None and not any(k.startswith("lower-layers") for k in res.scores)
    # nothing passes: the message names both kinds of mix
    res = guard_model(tiny_model_path, ft, load_beir(toy_beir), tmp_path / "g3", GuardConfig(min_val_gain=0.5),
                      general)
    assert res.decision == "base" and "alpha 0.1," in res.message and "the layer mixes" in res.message


def test_layer_mixes_equal_to_the_fine_tuned_model_are_not_tried(tiny_model_path, toy_beir, tmp_path, monkeypatch):
    """After training with frozen upper layers, a mix that takes the base's (unchanged) upper layers is the
    fine-tuned model again: the guard does not spend a measurement on it."""
    import torch

    from ragtune.train.mixing import top_changed_depth

    base_model = mixing._load(tiny_model_path, "cpu")
    ft_model = copy.deepcopy(base_model)
    assert top_changed_depth(base_model, ft_model) == -1
    with torch.no_grad():
        for name, p in ft_model.named_parameters():
            if ".embeddings." in name:
                p.add_(0.01)
    assert top_changed_depth(base_model, ft_model) == 0
    with torch.no_grad():
        for name, p in ft_model.named_parameters():
            if ".layer.0." in name:
                p.add_(0.01)
    assert top_changed_depth(base_model, ft_model) == 1  # layer 1 and the pooler as the base has them
    ft_model.save(str(tmp_path / "ft"))
    monkeypatch.setattr(guard_mod, "_evaluate", lambda model, dataset, batch_size: {"ndcg@10": 0.5})  # no gain
    result = guard_model(tiny_model_path, str(tmp_path / "ft"), load_beir(toy_beir), tmp_path / "g",
                         general=load_checkset("en"))
    assert result.decision == "base" and "alpha=0.5" in result.scores
    assert not any(k.startswith(("lower-layers", "base-")) for k in result.scores)  # both = the fine-tuned model
    with torch.no_grad():
        next(p for name, p in ft_model.named_parameters() if ".layer.1." in name).add_(0.01)
    assert top_changed_depth(base_model, ft_model) == 2
    ft_model.save(str(tmp_path / "ft2"))
    result = guard_model(tiny_model_path, str(tmp_path / "ft2"), load_beir(toy_beir), tmp_path / "g2",
                         general=load_checkset("en"))
    assert "lower-layers=1" in result.scores and "base-attn-from=1" in result.scores


def test_module_mixes_equal_to_the_fine_tuned_model_are_skipped(tiny_model_path, toy_beir, tmp_path, monkeypatch):
    """Trained with the upper attention frozen (freeze_modules), the base-attention mix is the fine-tuned model."""
    import torch

    from ragtune.train.mixing import layer_of, sublayer_kind

    ft_model = mixing._load(tiny_model_path, "cpu")
    with torch.no_grad():
        for name, p in ft_model.named_parameters():
            if not (sublayer_kind(name) == "attn" and layer_of(name) == 1):
                p.add_(0.01)
    ft_model.save(str(tmp_path / "ft"))
    monkeypatch.setattr(guard_mod, "_evaluate", lambda model, dataset, batch_size: {"ndcg@10": 0.5})  # no gain
    result = guard_model(tiny_model_path, str(tmp_path / "ft"), load_beir(toy_beir), tmp_path / "g",
                         general=load_checkset("en"))
    assert "base-ffn-from=1" in result.scores and "base-attn-from=1" not in result.scores

def test_interpolation_endpoints_and_midpoint(tiny_model_path, tmp_path):
    import torch

    other = _perturbed(tiny_model_path, tmp_path / "ft", scale=1.0)
    base_sd, ft_sd = _state(tiny_model_path), _state(other)
    for alpha, expected in ((0.0, base_sd), (1.0, ft_sd)):
        got = _state(interpolate_weights(tiny_model_path, other, alpha, tmp_path / f"mix{alpha}"))
        assert got.keys() == expected.keys()
        assert all(torch.equal(got[k], expected[k]) for k in got), alpha
    mid = _state(interpolate_weights(tiny_model_path, other, 0.5, tmp_path / "mid"))
    key = next(k for k in mid if k.endswith("word_embeddings.weight"))
    assert not torch.equal(base_sd[key], ft_sd[key])
    assert torch.allclose(mid[key], (base_sd[key] + ft_sd[key]) / 2, atol=1e-6)
    with pytest.raises(ConfigError, match="alpha=1.5"):
        interpolate_weights(tiny_model_path, other, 1.5, tmp_path / "bad")


def test_interpolation_rejects_different_architectures(tiny_model_path, minilm, tmp_path):
    with pytest.raises(ConfigError, match="different architectures.*shape"):
        interpolate_weights(tiny_model_path, minilm, 0.5, tmp_path / "x")
    assert not (tmp_path / "x").exists()


# --- decisions -----------------------------------------------------------------------------------------------


def test_clearly_worse_model_is_refused(minilm, minilm_path, noisy_minilm, toy_beir, general_small, tmp_path,
                                        caplog):
    val = load_beir(toy_beir)
    with caplog.at_level(logging.WARNING, logger="ragtune.train.guard"):
        result = guard_model(minilm, noisy_minilm, val, tmp_path / "g", GuardConfig(alphas=[0.5]),
                             general=general_small)
    assert result.decision == "base" and result.verdict == "fail" and result.alpha == 0.0
    assert result.score("base", "val") > result.score("fine-tuned", "val") + 0.2
    assert set(result.scores) == {"base", "fine-tuned", "alpha=0.5", *(f"lower-layers={k}" for k in range(1, 6)),
                                  *(f"base-{kind}-from={k}" for kind in ("attn", "ffn") for k in range(1, 6))}
    assert "kept the base model" in result.message and "forgetting guard" in caplog.text
    data = json.loads((tmp_path / "g" / "guard.json").read_text(encoding="utf-8"))
    assert data["decision"] == "base" and data["verdict"] == "fail" and data["message"] == result.message
    assert data["val_base"] == data["val_chosen"] == result.score("base", "val")
    assert data["general_fine_tuned"] < data["general_base"]
    assert "hit@1" in data["scores"]["base"]["val"] and set(data["scores"]["fine-tuned"]) == {"val", "general"}
    limit = data["general_base"] - data["max_general_drop"]
    mixes = {n: s for n, s in data["scores"].items() if n not in ("base", "fine-tuned")}
    assert all(("val" in s) == (s["general"]["ndcg@10"] >= limit) for s in mixes.values())
    assert any("val" not in s for s in mixes.values())  # the noisy mixes fail the check set: validation not spent
    # the model written is the base, as a plain sentence-transformers directory
    import torch
    from safetensors.torch import load_file

    got, want = load_file(tmp_path / "g" / "model" / "model.safetensors"), load_file(
        Path(minilm_path) / "model.safetensors")
    assert len(got) > 100 and set(got) <= set(want)  # (the packaged file also stores position_ids)
    assert all(torch.equal(got[k], want[k]) for k in got)
    assert (tmp_path / "g" / "model" / "modules.json").is_file()


def test_better_model_is_kept(minilm, noisy_minilm, toy_beir, general_small, tmp_path, caplog):
    val = load_beir(toy_beir)
    with caplog.at_level(logging.WARNING, logger="ragtune.train.guard"):
        result = guard_model(noisy_minilm, minilm, val, tmp_path / "g", general=general_small)
    assert result.decision == "fine-tuned" and result.verdict == "pass" and result.alpha == 1.0
    assert set(result.scores) == {"base", "fine-tuned"}  # no mix is tried when the fine-tuned model passes
    assert result.score("fine-tuned", "val") > result.score("base", "val")
    assert "forgetting guard" not in caplog.text
    data = json.loads((tmp_path / "g" / "guard.json").read_text(encoding="utf-8"))
    assert data["verdict"] == "pass" and data["check_set"] == "checkset-small"
    from sentence_transformers import SentenceTransformer

    emb = SentenceTransformer(str(result.model_dir), device="cpu").encode(["a river in Egypt"])
    assert emb.shape == (1, 384)


def test_best_passing_mix_is_chosen(tiny_model_path, toy_beir, tmp_path, monkeypatch):
    """Scores follow the share t of fine-tuned weights: val rises with t, the check set falls with t**2."""
    import torch

    ft = _perturbed(tiny_model_path, tmp_path / "ft", scale=1.0)
    base_sd, ft_sd = _state(tiny_model_path), _state(ft)
    key = next(k for k in base_sd if k.endswith("word_embeddings.weight"))
    b, f = base_sd[key][5, :4], ft_sd[key][5, :4]

    def fake_evaluate(model, dataset, batch_size):
        t = float(((model.state_dict()[key][5, :4] - b) / (f - b)).mean())
        return {"ndcg@10": 0.5 + 0.1 * t if dataset.name == "toy" else 0.8 - 0.05 * t * t}

    monkeypatch.setattr(guard_mod, "_evaluate", fake_evaluate)
    general = load_checkset("en")
    # fine-tuned: val +0.1 but general -0.05; on the default grid (0.1 apart) alpha 0.3 loses 0.0045 (passes),
    # 0.4 loses 0.008 (fails)
    result = guard_model(tiny_model_path, ft, load_beir(toy_beir), tmp_path / "g", GuardConfig(measure_all=True),
                         general)
    assert result.decision == "interpolated" and result.alpha == 0.3 and result.verdict == "warn"
    # the tiny model has 2 layers: one layer mix, whose fine-tuned embeddings (t = 1 here) fail the check set
    assert set(result.scores) == {"base", "fine-tuned", "lower-layers=1", "base-attn-from=1", "base-ffn-from=1",
                                  *(f"alpha={a / 10:g}" for a in range(1, 10))}
    assert "lost 5.0 points" in result.message and "0.3 of the fine-tuned weights" in result.message
    got = _state(result.model_dir)
    assert torch.allclose(got[key], 0.7 * base_sd[key] + 0.3 * ft_sd[key], atol=1e-6)
    # the default search: from the most change kept down, stopping at alpha 0.3 (0.1 and 0.2 keep less); the mixes
    # that fail the check set are not scored on validation
    quick = guard_model(tiny_model_path, ft, load_beir(toy_beir), tmp_path / "gq", general=general)
    assert quick.alpha == 0.3 and quick.scores["alpha=0.3"] == result.scores["alpha=0.3"]
    assert "alpha=0.1" not in quick.scores and "alpha=0.2" not in quick.scores
    assert set(quick.scores["alpha=0.4"]) == {"general"} and set(quick.scores["alpha=0.3"]) == {"val", "general"}
    # a looser limit lets a bigger mix through (0.6 loses 0.018); the best validation score among passing mixes wins
    cfg = GuardConfig(max_general_drop=0.02)
    assert guard_model(tiny_model_path, ft, load_beir(toy_beir), tmp_path / "g2", cfg, general).alpha == 0.6
    cfg = GuardConfig(alphas=[0.25, 0.5])  # a user's own grid: 0.25 loses 0.003, 0.5 loses 0.0125
    assert guard_model(tiny_model_path, ft, load_beir(toy_beir), tmp_path / "g2b", cfg, general).alpha == 0.25
    # validation flat from t = 0.1 on (a saturated validation set): the tie goes to the larger passing share
    def saturated(model, dataset, batch_size):
        score = fake_evaluate(model, dataset, batch_size)
        return {"ndcg@10": min(score["ndcg@10"], 0.51)} if dataset.name == "toy" else score

    monkeypatch.setattr(guard_mod, "_evaluate", saturated)
    assert guard_model(tiny_model_path, ft, load_beir(toy_beir), tmp_path / "g2c", general=general).alpha == 0.3
    monkeypatch.setattr(guard_mod, "_evaluate", fake_evaluate)
    # demanding a larger validation gain than any candidate offers keeps the base
    cfg = GuardConfig(min_val_gain=0.2, max_general_drop=1.0)
    res = guard_model(tiny_model_path, ft, load_beir(toy_beir), tmp_path / "g3", cfg, general)
    assert res.decision == "base" and "did not beat the base on validation by more than 20.0 points" in res.message
    with pytest.raises(ConfigError, match="enabled=False"):
        guard_model(tiny_model_path, ft, load_beir(toy_beir), tmp_path / "g4", GuardConfig(enabled=False))
