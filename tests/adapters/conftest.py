"""Fixtures for adapter tests: a loopback embeddings server and an in-memory cache."""

from __future__ import annotations

import pytest
from embedding_server import EmbeddingServer


@pytest.fixture(scope="session")
def _server():
    with EmbeddingServer(dim=16) as srv:
        yield srv


@pytest.fixture()
def embedding_server(_server):
    _server.reset()
    yield _server
    _server.reset()
