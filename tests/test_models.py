from __future__ import annotations

from types import SimpleNamespace

import pytest

from ragtune.errors import ConfigError
from ragtune.models import position_limit, set_max_seq_length


def _encoder(**config):
    return [SimpleNamespace(auto_model=SimpleNamespace(config=SimpleNamespace(**config)))]


@pytest.mark.parametrize(("config", "limit"), [
    ({"model_type": "bert", "max_position_embeddings": 512}, 512),
    ({"model_type": "xlm-roberta", "max_position_embeddings": 514, "pad_token_id": 1}, 512),  # e5, bge-m3 kind
    ({"model_type": "roberta", "max_position_embeddings": 514, "pad_token_id": 1}, 512),
    ({"model_type": "unknown"}, None),
])
def test_position_limit_is_the_usable_part_of_the_position_table(config, limit):
    assert position_limit(_encoder(**config)) == limit


def test_set_max_seq_length_refuses_more_tokens_than_positions(tiny_model_path):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(tiny_model_path, device="cpu")
    set_max_seq_length(model, 512, "max_length")
    assert model.max_seq_length == 512
    with pytest.raises(ConfigError, match=r"--max-seq-length=600: tiny has 512 positions.*at most 512"):
        set_max_seq_length(model, 600, "--max-seq-length", "tiny")
    assert model.max_seq_length == 512  # left as it was
    with pytest.raises(ConfigError, match="max_length=-1: must be a positive number of tokens"):
        set_max_seq_length(model, -1, "max_length")
