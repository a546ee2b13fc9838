"""The embedding cache and the endpoint encoder against a real loopback server, with injected faults."""

from __future__ import annotations

import numpy as np
import pytest

from ragtune.adapters import EmbeddingCache, EndpointEncoder, EndpointError, embed_texts
from ragtune.adapters.cache import text_hash
from ragtune.errors import ConfigError

TEXTS = [f"document number {i} about topic {i % 3}" for i in range(10)]


def _encoder(server, **kw) -> EndpointEncoder:
    kw.setdefault("batch_size", 4)
    kw.setdefault("max_retries", 1)
    return EndpointEncoder(server.base_url, "fake-embed", **kw)


def test_cache_persists_and_refuses_another_dimension(tmp_path):
    path = tmp_path / "c.sqlite"
    cache = EmbeddingCache(path)
    cache.put("enc|query", ["h1", "h2"], np.eye(2, 4, dtype=np.float32))
    cache.close()
    again = EmbeddingCache(path)
    got = again.get("enc|query", ["h1", "h2", "h3"])
    assert set(got) == {"h1", "h2"} and again.dim("enc|query") == 4
    np.testing.assert_array_equal(got["h2"], [0, 1, 0, 0])
    with pytest.raises(ConfigError, match="holds 4-d vectors, the encoder now returns 3-d"):
        again.put("enc|query", ["h3"], np.ones((1, 3), dtype=np.float32))
    assert again.count("enc|query") == 2  # the refused batch left nothing behind


def test_each_text_is_embedded_once_in_batches(embedding_server):
    cache = EmbeddingCache(None)
    enc = _encoder(embedding_server, input_type=True, query_prefix="query: ")
    first = embed_texts(enc, TEXTS + TEXTS[:3], "query", cache)
    assert first.shape == (13, 16) and embedding_server.requests == 3  # 10 distinct texts, batches of 4
    again = embed_texts(enc, TEXTS, "query", cache)
    np.testing.assert_array_equal(again, first[:10])
    assert embedding_server.requests == 3  # all cached
    assert embedding_server.texts_seen[0] == "query: document number 0 about topic 0"
    assert set(embedding_server.input_types) == {"query"}
    embed_texts(enc, TEXTS[:2], "document", cache)  # the other side is another cache key
    assert embedding_server.requests == 4 and embedding_server.input_types[-1] == "document"


def test_transient_500s_are_retried_within_the_bound(embedding_server):
    embedding_server.fail_next = 1
    vecs = embed_texts(_encoder(embedding_server, max_retries=1), TEXTS[:4], "query", EmbeddingCache(None))
    assert vecs.shape == (4, 16) and embedding_server.requests == 2


def test_persistent_500s_fail_clearly_and_keep_what_was_cached(embedding_server, tmp_path):
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    enc = _encoder(embedding_server, max_retries=1)
    embedding_server.fail_after = 2  # two batches of 4 succeed, then every request fails
    with pytest.raises(EndpointError, match=r"HTTP 500 .* after 1 retries.*8 of 10 new texts were embedded"):
        embed_texts(enc, TEXTS, "document", cache)
    assert embedding_server.requests == 4  # 2 good + 1 try + 1 retry: bounded
    assert cache.count(enc.key("document")) == 8
    embedding_server.reset()
    vecs = embed_texts(enc, TEXTS, "document", EmbeddingCache(tmp_path / "c.sqlite"))  # resumes
    assert vecs.shape == (10, 16) and embedding_server.requests == 1


def test_wrong_length_vectors_are_an_error_and_nothing_cached_is_lost(embedding_server):
    cache = EmbeddingCache(None)
    enc = _encoder(embedding_server)
    embedding_server.wrong_dim_after = 1
    with pytest.raises(ConfigError, match="returned 19-d vectors where 16-d were expected.*4 of 10 new texts"):
        embed_texts(enc, TEXTS, "query", cache)
    assert cache.count(enc.key("query")) == 4
    embedding_server.reset()
    embedding_server.drop_one = True
    with pytest.raises(EndpointError, match="returned 3 embeddings for 4 inputs"):
        embed_texts(enc, TEXTS, "query", cache)
    assert cache.count(enc.key("query")) == 4


def test_expected_dimension_and_auth_errors(embedding_server):
    cache = EmbeddingCache(None)
    enc = _encoder(embedding_server)
    with pytest.raises(ConfigError, match="returned 16-d vectors where 384-d were expected"):
        embed_texts(enc, TEXTS[:2], "query", cache, expected_dim=384)
    embedding_server.fail_next, embedding_server.fail_status = 1, 401
    with pytest.raises(ConfigError, match="refused the API key"):
        embed_texts(enc, TEXTS[:2], "query", cache)


def test_unreachable_endpoint_is_an_endpoint_error():
    enc = EndpointEncoder("http://127.0.0.1:9/v1", "m", max_retries=0, timeout=2)
    with pytest.raises(EndpointError, match="could not reach the endpoint http://127.0.0.1:9/v1"):
        embed_texts(enc, ["x"], "query", EmbeddingCache(None))


def test_text_hash_is_stable():
    assert text_hash("长城") == text_hash("长城") != text_hash("长城 ")
