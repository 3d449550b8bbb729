"""tf-finetune: fine-tune Hugging Face transformers with Keras/TensorFlow."""
import importlib.abc
import importlib.util
import os
import sys

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


_TF_AUTO = "transformers.models.auto.modeling_tf_auto"
# What the classes import, each of which imports the Auto module halfway through its own import.
_TF_MODULES = (_TF_AUTO, "transformers.modeling_tf_utils", "transformers.generation.tf_utils",
               "transformers.models.mistral.modeling_tf_mistral")


class _RegisterDecoders(importlib.abc.MetaPathFinder):
    """Registers tf-finetune's TF LLM classes (tf_finetune.models.decoders) with transformers' TF Auto classes as
    soon as those are imported, so `TFAutoModelForCausalLM.from_pretrained` builds them, while `import tf_finetune`
    itself imports neither TensorFlow nor transformers.

    The registration waits until the Auto module and every module of _TF_MODULES being imported at the time are
    complete: the classes import them, and importing a half-initialised module fails.
    """

    def __init__(self) -> None:
        self.loading: set[str] = set()

    def find_spec(self, name: str, path: object = None, target: object = None) -> "importlib.machinery.ModuleSpec":
        if name not in _TF_MODULES:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        execute = spec.loader.exec_module

        def exec_module(module: object) -> None:
            self.loading.add(name)
            try:
                execute(module)
            finally:
                self.loading.discard(name)
            if _TF_AUTO in sys.modules and not self.loading and self in sys.meta_path:
                sys.meta_path.remove(self)
                _register_decoders()

        spec.loader.exec_module = exec_module
        return spec


def _register_decoders() -> None:
    """Import tf_finetune.models.decoders, which registers its classes; when the import of that module is what
    brought in transformers' TF modules, it is under way, and registers them at its end."""
    if "tf_finetune.models.decoders" not in sys.modules:
        importlib.import_module("tf_finetune.models.decoders")


if _TF_AUTO in sys.modules:
    _register_decoders()
else:
    sys.meta_path.insert(0, _RegisterDecoders())
