from __future__ import annotations

import numpy as np
import pytest

from ragtune.errors import ConfigError
from ragtune.evaluate.stats import bootstrap_ci, paired_test


def test_bootstrap_ci_contains_the_mean_and_is_seeded():
    values = np.random.default_rng(0).random(300)
    low, high = bootstrap_ci(values, 1000, seed=1)
    assert low < values.mean() < high
    assert high - low < 0.1
    assert bootstrap_ci(values, 1000, seed=1) == (low, high)


def test_bootstrap_ci_edge_cases():
    assert bootstrap_ci([1.0, 1.0, 1.0], 1000) == (1.0, 1.0)
    assert bootstrap_ci([0.25], 1000) == (0.25, 0.25)
    assert bootstrap_ci([0.1, 0.9], 0) is None
    with pytest.raises(ConfigError, match="empty"):
        bootstrap_ci([], 100)
    with pytest.raises(ConfigError, match="n_resamples"):
        bootstrap_ci([0.1, 0.2], -1)


@pytest.mark.parametrize("method", ["wilcoxon", "permutation"])
def test_identical_systems_give_p_one(method):
    a = np.random.default_rng(0).random(50)
    assert paired_test(a, a.copy(), method=method) == pytest.approx(1.0)


@pytest.mark.parametrize("method", ["wilcoxon", "permutation"])
def test_clearly_different_systems_give_small_p(method):
    rng = np.random.default_rng(0)
    a = rng.random(200)
    b = np.clip(a + 0.1 + rng.normal(0, 0.05, 200), 0, 1)
    assert paired_test(a, b, method=method, n_resamples=2000) < 0.01


def test_noise_is_not_significant():
    rng = np.random.default_rng(3)
    a = rng.random(100)
    b = a + rng.normal(0, 0.01, 100)
    assert paired_test(a, b) > 0.05


def test_paired_test_is_fast_for_3000_queries():
    import time

    rng = np.random.default_rng(0)
    a, b = rng.random(3000), rng.random(3000)
    start = time.perf_counter()
    paired_test(a, b)
    assert time.perf_counter() - start < 1.0


def test_paired_test_errors():
    with pytest.raises(ConfigError, match="same queries"):
        paired_test([0.1, 0.2], [0.1])
    with pytest.raises(ConfigError, match="method"):
        paired_test([0.1], [0.2], method="t")
