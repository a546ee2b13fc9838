"""A small real run directory (English, Chinese and hostile text) built once per test session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from report_helpers import build_run, make_docs


@pytest.fixture(scope="session")
def small_run(tmp_path_factory, tiny_model_path) -> Path:
    """A finished ``ragtune run`` over :func:`make_docs` with the tiny random model (do not modify it)."""
    root = tmp_path_factory.mktemp("report-run")
    return build_run(make_docs(root / "docs"), root / "run", tiny_model_path)


@pytest.fixture()
def run_copy(small_run, tmp_path) -> Path:
    """A private copy of :func:`small_run` that a test may change."""
    return Path(shutil.copytree(small_run, tmp_path / "run"))
