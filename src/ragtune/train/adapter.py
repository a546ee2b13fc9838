"""Adapter training (issue 6). The implementation lives in :mod:`ragtune.adapters`; this module keeps the
``ragtune.train.<artifact>`` layout, so ``from ragtune.train.adapter import train_adapter`` works."""

from ragtune.adapters.config import AdapterConfig
from ragtune.adapters.train import AdapterTrainResult, make_encoder, train_adapter

__all__ = ["AdapterConfig", "AdapterTrainResult", "make_encoder", "train_adapter"]
