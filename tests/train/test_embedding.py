"""Embedding fine-tuning: pairs, the no-shared-positive batch sampler, training, checkpoints and resume."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import pytest

from ragtune.config import EmbeddingTrainConfig
from ragtune.data.beir import load_beir
from ragtune.errors import ConfigError, DataFormatError
from ragtune.generate import ict_queries
from ragtune.train import NoSharedPositiveBatchSampler, build_pairs, layers, train_embedding

CORPUS = {f"c{i}": {"title": f"Topic {i}", "text": f"Topic {i} opens with fact {i}. A second remark on item {i * 3}. "
                                                   f"It closes with number {i * 7}.", "doc": f"file{i // 3}"}
          for i in range(12)}


def _train_data():
    gs = ict_queries(CORPUS, per_chunk=2, mask_prob=0.5, seed=0)
    return CORPUS, gs.queries, gs.qrels, gs.metadata


def _config(tiny_model_path, **kw) -> EmbeddingTrainConfig:
    return EmbeddingTrainConfig(base=tiny_model_path, batch_size=4, max_steps=4, learning_rate=1e-3,
                                max_seq_length=64, **kw)


# --- pairs -----------------------------------------------------------------------------------------------------


def test_build_pairs_masks_ict_sentences_and_names_documents():
    corpus = {"a": {"title": "T", "text": "First fact here. Second fact there.", "doc": "file.md"},
              "b": {"title": "", "text": "Other text entirely. More of it."}}
    queries = {"q1": "First fact here.", "q2": "Second fact there.", "q3": "Other text entirely.", "q4": "x"}
    qrels = {"q1": {"a": 1}, "q2": {"a": 1}, "q3": {"b": 1, "missing": 1}, "q4": {"b": 0}}
    meta = {"q1": {"method": "ict", "mask": True, "span": [0, 16]}, "q2": {"method": "ict", "mask": False},
            "q3": {"method": "ict", "mask": True}}  # no span: removed by exact match
    pairs = {p.query_id: p for p in build_pairs(corpus, queries, qrels, meta)}
    assert set(pairs) == {"q1", "q2", "q3"}  # score 0 and unknown chunks are skipped
    assert pairs["q1"].positive == "T Second fact there."
    assert pairs["q2"].positive == "T First fact here. Second fact there."
    assert pairs["q3"].positive == "More of it."
    assert (pairs["q1"].positive_id, pairs["q1"].doc_id) == ("a", "file.md")
    assert (pairs["q3"].positive_id, pairs["q3"].doc_id) == ("b", "b")
    assert build_pairs(corpus, {"q1": "dup", "q2": "dup"}, {"q1": {"a": 1}, "q2": {"a": 1}}).__len__() == 1


# --- sampler ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_keys, per_key, batch_size, drop_last", [
    (10, 1, 4, False), (10, 3, 4, False), (10, 3, 4, True), (5, 7, 5, False), (3, 10, 8, False),
    (40, 2, 32, False), (2, 1, 2, True),
])
def test_sampler_never_repeats_a_positive_in_a_batch(n_keys, per_key, batch_size, drop_last):
    keys = [f"k{i % n_keys}" for i in range(n_keys * per_key)]
    sampler = NoSharedPositiveBatchSampler(keys, batch_size=batch_size, drop_last=drop_last, seed=5, keys=keys)
    batches = list(sampler)
    assert len(batches) == len(sampler) > 0
    seen = Counter()
    for batch in batches:
        assert len({keys[i] for i in batch}) == len(batch)  # no shared positive
        assert 2 <= len(batch) <= batch_size
        if drop_last:
            assert len(batch) == batch_size
        seen.update(batch)
    assert max(seen.values()) == 1  # each row at most once per epoch
    if not drop_last and n_keys >= batch_size:
        assert len(seen) >= len(keys) - batch_size  # only a few stragglers can be left out
    assert list(sampler) == batches  # deterministic within an epoch
    sampler.set_epoch(1)
    assert list(sampler) != batches or len(batches) == 1  # reshuffled each epoch
    again = NoSharedPositiveBatchSampler(keys, batch_size=batch_size, drop_last=drop_last, seed=5, keys=keys)
    again.set_epoch(1)
    assert list(again) == list(sampler)


def test_sampler_rejects_misaligned_keys():
    with pytest.raises(ValueError, match="keys has 2 entries"):
        NoSharedPositiveBatchSampler([1, 2, 3], batch_size=2, drop_last=False, keys=["a", "b"])


# --- training --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tiny_model_path, tmp_path_factory):
    """One uninterrupted 4-step run (shared by the tests below)."""
    out = tmp_path_factory.mktemp("emb") / "run"
    return train_embedding(_train_data(), _config(tiny_model_path), out, save_every_s=None)


def test_training_writes_a_loadable_sentence_transformers_dir(trained):
    from sentence_transformers import SentenceTransformer

    assert trained.steps == 4 and trained.n_pairs == 24 and trained.batch_size == 4
    assert trained.resumed_from_step is None
    model = SentenceTransformer(str(trained.model_dir), device="cpu")
    assert model.encode(["how long is the wall"]).shape == (1, 32)
    log = json.loads(trained.log_path.read_text())
    assert [row["step"] for row in log["losses"]] == [1, 2, 3, 4]
    assert log["n_pairs"] == 24 and log["steps"] == 4 and log["steps_per_epoch"] == 6
    assert not (trained.model_dir.parent / "checkpoints").exists()  # removed after success


def test_interrupted_training_resumes_from_its_checkpoint(trained, tiny_model_path, tmp_path, interrupted_after):
    from sentence_transformers import SentenceTransformer

    out = tmp_path / "run"
    with interrupted_after(3):
        train_embedding(_train_data(), _config(tiny_model_path), out, save_steps=2, save_every_s=None)
    assert [p.name for p in (out / "checkpoints").glob("checkpoint-*")] == ["checkpoint-2"]
    assert not (out / "model").exists()

    result = train_embedding(_train_data(), _config(tiny_model_path), out, save_steps=2, save_every_s=None)
    assert result.resumed_from_step == 2 and result.steps == 4
    assert [row["step"] for row in result.losses] == [1, 2, 3, 4]
    a = SentenceTransformer(str(trained.model_dir), device="cpu")
    b = SentenceTransformer(str(result.model_dir), device="cpu")
    diff = max((pa - pb).abs().max().item() for pa, pb in zip(a.parameters(), b.parameters(), strict=True))
    assert diff < 1e-6  # the resumed run ends exactly where the uninterrupted one did



def _layer_change(base_dir, trained_dir) -> dict[int, float]:
    """Mean absolute weight change per depth (0 = embeddings, i + 1 = layer i, 3 = pooler of the 2-layer model)."""
    from sentence_transformers import SentenceTransformer

    from ragtune.train.mixing import layer_depths

    a = dict(SentenceTransformer(base_dir, device="cpu").named_parameters())
    b = dict(SentenceTransformer(str(trained_dir), device="cpu").named_parameters())
    depths = layer_depths(a)
    change: dict[int, list[float]] = {}
    for name, param in a.items():
        change.setdefault(depths[name], []).append((param - b[name]).abs().mean().item())
    return {d: sum(v) / len(v) for d, v in change.items()}


def test_layer_rates_and_freezing_pick_the_right_weights(tiny_model_path):
    import re

    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(tiny_model_path, device="cpu")
    rates = layers.layer_learning_rates(model, 1e-3, decay=0.5)
    assert sorted(rates.values(), reverse=True) == pytest.approx([5e-4, 2.5e-4, 1.25e-4])  # layer 0, 1, pooler
    for name, _ in model.named_parameters():
        hits = [lr for pattern, lr in rates.items() if re.search(pattern, "model." + name)]  # as the loss names it
        expected = ([] if ".embeddings." in name else [5e-4] if ".layer.0." in name else [2.5e-4]
                    if ".layer.1." in name else [1.25e-4])
        assert hits == pytest.approx(expected), name
    assert layers.freeze_upper_layers(model, 1) > 0
    for name, param in model.named_parameters():
        assert param.requires_grad is not (".layer.1." in name or ".pooler." in name), name
    assert sorted(layers.layer_learning_rates(model, 1e-3, decay=0.5).values()) == [5e-4]  # frozen: no pattern
    with pytest.raises(ConfigError, match="freeze between 1 and 1"):
        layers.freeze_upper_layers(model, 2)


def test_frozen_upper_layers_stay_as_the_base_has_them(tiny_model_path, trained, tmp_path):
    result = train_embedding(_train_data(), _config(tiny_model_path, freeze_upper_layers=1), tmp_path / "frozen",
                             save_every_s=None)
    change = _layer_change(tiny_model_path, result.model_dir)
    assert change[2] == 0.0 and change[3] == 0.0  # layer 1 and the pooler: untouched
    assert change[0] > 0 and change[1] > 0
    assert json.loads(result.log_path.read_text())["config"]["freeze_upper_layers"] == 1
    full = _layer_change(tiny_model_path, trained.model_dir)
    assert full[2] > 0  # without freezing, the same run moves layer 1


def test_max_seq_length_beyond_the_encoders_positions_is_refused_before_training(tiny_model_path, tmp_path):
    config = EmbeddingTrainConfig(base=tiny_model_path, batch_size=4, max_steps=4, max_seq_length=1024)
    with pytest.raises(ConfigError, match=r"max_seq_length=1024: .*tiny-bert.* has 512 positions.*at most 512"):
        train_embedding(_train_data(), config, tmp_path / "long", save_every_s=None)
    assert not (tmp_path / "long" / "model").exists()


def test_frozen_modules_keep_one_sub_layer_kind_as_the_base_has_it(tiny_model_path, tmp_path):
    import torch
    from pydantic import ValidationError
    from sentence_transformers import SentenceTransformer

    from ragtune.train.mixing import layer_of, sublayer_kind

    model = SentenceTransformer(tiny_model_path, device="cpu")
    assert layers.freeze_modules(model, ["attn@1"]) > 0
    for name, param in model.named_parameters():
        assert param.requires_grad is not (sublayer_kind(name) == "attn" and layer_of(name) >= 1), name
    with pytest.raises(ConfigError, match="'ffn@2'.*between 0 and 1"):
        layers.freeze_modules(model, ["ffn@2"])
    top = SentenceTransformer(tiny_model_path, device="cpu")  # a negative K counts from the top
    assert layers.freeze_modules(top, ["ffn@-1"]) > 0
    assert {layer_of(n) for n, p in top.named_parameters() if not p.requires_grad} == {1}
    assert layers.freeze_modules(top, ["attn@-3"]) > 0  # more than the model has: every layer
    assert {layer_of(n) for n, p in top.named_parameters() if sublayer_kind(n) == "attn" and p.requires_grad} == set()
    unnamed = torch.nn.Sequential(torch.nn.Linear(2, 2))  # weights ragtune cannot sort into sub-layers
    with pytest.raises(ConfigError, match="'attn@-3'"):
        layers.freeze_modules(unnamed, ["attn@-3"])
    assert layers.freeze_modules(unnamed, ["attn@-3"], strict=False) == 0  # the default's spec: a warning only
    assert all(p.requires_grad for p in unnamed.parameters())
    with pytest.raises(ValidationError, match="'attention@1'.*KIND@K"):
        EmbeddingTrainConfig(base=tiny_model_path, freeze_modules=["attention@1"])
    result = train_embedding(_train_data(), _config(tiny_model_path, freeze_modules=["attn@1"]), tmp_path / "fm",
                             save_every_s=None)
    before = dict(SentenceTransformer(tiny_model_path, device="cpu").named_parameters())
    after = dict(SentenceTransformer(str(result.model_dir), device="cpu").named_parameters())
    moved = {name for name, p in before.items() if not bool((p == after[name]).all())}
    assert not any(sublayer_kind(n) == "attn" and layer_of(n) == 1 for n in moved)
    assert any(sublayer_kind(n) == "ffn" and layer_of(n) == 1 for n in moved)  # the rest of layer 1 trains
    assert any(sublayer_kind(n) == "attn" and layer_of(n) == 0 for n in moved)
    assert json.loads(result.log_path.read_text())["config"]["freeze_modules"] == ["attn@1"]


def test_layer_lr_decay_moves_upper_layers_less(tiny_model_path, trained, tmp_path):
    result = train_embedding(_train_data(), _config(tiny_model_path, layer_lr_decay=0.05), tmp_path / "decay",
                             save_every_s=None)
    change, full = _layer_change(tiny_model_path, result.model_dir), _layer_change(tiny_model_path, trained.model_dir)
    assert change[2] < 0.2 * change[1]  # layer 1 trains at 1/20 of layer 0's rate
    assert full[2] > 0.5 * full[1]  # with one rate they move alike
    assert change[2] > 0


# --- LoRA ------------------------------------------------------------------------------------------------------


def _weights(path) -> dict:
    from sentence_transformers import SentenceTransformer

    return {k: v.detach().clone() for k, v in SentenceTransformer(str(path), device="cpu").state_dict().items()}


def test_lora_trains_low_rank_changes_and_writes_a_plain_model(tiny_model_path, tmp_path):
    from ragtune.data.beir import BeirDataset

    corpus, queries, qrels, _ = _train_data()
    val = BeirDataset(corpus, queries, qrels)  # the best-checkpoint path writes the model too
    # every evaluated step has moved; nothing frozen, so every linear layer gets adapters that train
    config = _config(tiny_model_path, lora_rank=2, warmup_ratio=0.0, freeze_modules=[])
    result = train_embedding(_train_data(), config, tmp_path / "lora", val=val, save_every_s=None)
    import torch

    base, tuned = _weights(tiny_model_path), _weights(result.model_dir)
    assert set(base) == set(tuned)  # plain names: no adapter weights, loads without peft
    changed = {k for k in base if not torch.equal(base[k], tuned[k])}
    linear = {k for k, v in base.items() if k.endswith(".weight") and v.ndim == 2 and ".embeddings." not in k
              and ".pooler." not in k}
    assert changed == linear  # every linear layer of the encoder, and nothing else (biases, norms, embeddings)
    for k in linear:
        assert torch.linalg.matrix_rank(tuned[k] - base[k], atol=1e-6).item() <= 2, k
    assert json.loads(result.log_path.read_text())["config"]["lora_rank"] == 2


def test_interrupted_lora_training_resumes_from_its_checkpoint(tiny_model_path, tmp_path, interrupted_after):
    config = _config(tiny_model_path, lora_rank=2, lora_alpha=8)
    whole = train_embedding(_train_data(), config, tmp_path / "whole", save_every_s=None)
    out = tmp_path / "run"
    with interrupted_after(3):
        train_embedding(_train_data(), config, out, save_steps=2, save_every_s=None)
    result = train_embedding(_train_data(), config, out, save_steps=2, save_every_s=None)
    assert result.resumed_from_step == 2 and result.steps == 4
    a, b = _weights(whole.model_dir), _weights(result.model_dir)
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6


def test_lora_checkpoint_of_another_configuration_is_a_clear_error(tiny_model_path, tmp_path):
    from ragtune.models import load_sentence_transformer
    from ragtune.train.lora import add_lora, load_lora_checkpoint

    saved = load_sentence_transformer(tiny_model_path, device="cpu")
    add_lora(saved, 2)
    saved.save(str(tmp_path / "ckpt"))
    for rank, targets in ((4, None), (2, ["query"])):  # another rank; adapters on fewer layers
        other = load_sentence_transformer(tiny_model_path, device="cpu")
        add_lora(other, rank, targets=targets)
        with pytest.raises(ConfigError, match="does not match this LoRA configuration.*start afresh"):
            load_lora_checkpoint(other, tmp_path / "ckpt")
    with pytest.raises(ConfigError, match="no .safetensors"):
        load_lora_checkpoint(other, tmp_path)


def test_lora_options_are_checked(tiny_model_path, tmp_path):
    with pytest.raises(ValueError, match="lora_alpha is set but lora_rank is not"):
        EmbeddingTrainConfig(lora_alpha=16)
    with pytest.raises(ConfigError, match="lora_targets \\['nonexistent'\\]"):
        train_embedding(_train_data(), _config(tiny_model_path, lora_rank=2, lora_targets=["nonexistent"]),
                        tmp_path / "bad")


@pytest.mark.parametrize("qrels", [{}, {"q": {"nope": 1}}, {"q": {"c0": 1}}])
def test_too_small_training_set_is_a_clear_error(tiny_model_path, tmp_path, qrels):
    with pytest.raises(DataFormatError, match="needs at least 2"):
        train_embedding((CORPUS, {"q": "anything"}, qrels), _config(tiny_model_path), tmp_path / "x")
    with pytest.raises(TypeError, match="BeirDataset or a tuple"):
        train_embedding("not data", _config(tiny_model_path), tmp_path / "x")


# --- integration -----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_minilm_fine_tunes_on_pseudo_queries(toy_beir, tmp_path):
    from sentence_transformers import SentenceTransformer

    from ragtune.config import GenerateConfig
    from ragtune.generate import eval_set, generate_queries

    ds = load_beir(toy_beir)
    gs = generate_queries(ds.corpus, GenerateConfig(method="ict", per_chunk=2))
    config = EmbeddingTrainConfig(max_steps=3, batch_size=4, max_seq_length=64)
    result = train_embedding((ds.corpus, gs.queries, gs.qrels, gs.metadata), config, tmp_path / "minilm",
                             val=eval_set(ds.corpus))
    model = SentenceTransformer(str(result.model_dir), device="cpu")
    emb_ = model.encode(["how do plants make glucose", "长城 东起 哪里"], normalize_embeddings=True)
    assert emb_.shape == (2, 384)
    assert result.evals and "eval_val_cosine_ndcg@10" in result.evals[-1]
    shutil.rmtree(result.model_dir)
