"""Hyperparameter search with KerasTuner's oracles."""

from tf_finetune.tuning.search import tune

__all__ = ["tune"]
