"""Training: run assembly (`FineTuneRun`), the phases of `train`, resume, callbacks, step log, trackers."""

from tf_finetune.training.pipeline import train
from tf_finetune.training.run import FineTuneRun

__all__ = ["FineTuneRun", "train"]
