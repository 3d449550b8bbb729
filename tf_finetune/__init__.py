"""tf-finetune: fine-tune Hugging Face transformers with Keras/TensorFlow."""
import os

# transformers' TF models are built on tf-keras (Keras 2); this must be set before TensorFlow is imported.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

_API = {
    "TrainConfig": "tf_finetune.config",
    "FineTuneRun": "tf_finetune.training.run",
    "train": "tf_finetune.training.pipeline",
    "tune": "tf_finetune.tuning.search",
    "get_task": "tf_finetune.tasks",
    "list_tasks": "tf_finetune.tasks",
    "load_model": "tf_finetune.models.loading",
    "load_tokenizer": "tf_finetune.models.loading",
}


def __getattr__(name: str):
    """Import the public API lazily, so `import tf_finetune` stays light."""
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'tf_finetune' has no attribute {name!r}")
