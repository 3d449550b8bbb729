"""LoRA on transformers' TF models: low-rank adapters on Dense kernels, freezing, and merging them back.

`add_lora` wraps the target Dense layers of a built model in `LoraDense`, `base(x) + alpha/r * dropout(x) @ A @ B`
with B starting at zero (the model is unchanged until it trains), and leaves only the adapters and the modules to
save trainable. Layers are named by their PyTorch module paths (`bert.encoder.layer.0.attention.self.query`), the
names PEFT matches `target_modules` and `modules_to_save` against.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Optional, Sequence

import numpy as np
import tensorflow as tf
import tf_keras
from transformers.modeling_tf_pytorch_utils import TransposeType, convert_tf_weight_name_to_pt_weight_name

from tf_finetune.config import ALL_LINEAR
from tf_finetune.core.errors import UserError
from tf_finetune.models.families import family_of

if TYPE_CHECKING:
    from tf_finetune.config import TrainConfig


@dataclass(frozen=True)
class LoraSettings:
    """What adapts a model: rank, alpha (the update is scaled by alpha/rank), dropout, and which modules."""

    rank: int
    alpha: float
    dropout: float
    target_modules: tuple[str, ...]
    modules_to_save: tuple[str, ...]

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


class LoraDense(tf_keras.layers.Layer):
    """A frozen Dense layer plus a trainable low-rank update: `base(x) + scale * dropout(x) @ A @ B`.

    A (inputs x rank) starts as PEFT's does (Kaiming-uniform), B (rank x units) at zero. Both are float32 variables;
    under mixed precision they are cast to the compute dtype inside the call, like every Keras weight.
    """

    def __init__(self, base: tf_keras.layers.Dense, rank: int, scale: float, dropout: float, **kwargs):
        super().__init__(name=f"{base.name}_lora", **kwargs)
        self.base = base
        self.scale = scale
        self.dropout = tf_keras.layers.Dropout(dropout)
        inputs, units = base.kernel.shape
        bound = 1 / math.sqrt(inputs)  # kaiming_uniform(a=sqrt(5)), as torch.nn.Linear and PEFT initialise A
        with tf.name_scope(base.kernel.name.rsplit("/", 1)[0] + "/"):  # unique names: .../query/lora_A:0
            self.lora_A = self.add_weight("lora_A", shape=(inputs, rank), dtype=tf.float32,
                                          initializer=tf_keras.initializers.RandomUniform(-bound, bound))
            self.lora_B = self.add_weight("lora_B", shape=(rank, units), dtype=tf.float32, initializer="zeros")

    def call(self, inputs: tf.Tensor, training: Optional[bool] = None) -> tf.Tensor:
        update = tf.tensordot(tf.tensordot(self.dropout(inputs, training=training), self.lora_A, axes=1),
                              self.lora_B, axes=1)
        return self.base(inputs) + tf.cast(self.scale, update.dtype) * update

    def delta(self) -> tf.Tensor:
        """The update to the base kernel that merging adds: scale * A @ B."""
        return self.scale * tf.matmul(self.lora_A, self.lora_B)


def settings_for(config: "TrainConfig", model: tf_keras.Model) -> LoraSettings:
    """The LoRA settings of a run: alpha defaults to twice the rank, the targets to the architecture's attention
    query and value projections (its family's LoRA targets), the modules to save to the task head (see
    `head_modules`)."""
    targets = config.lora_target_modules
    if targets is None:
        targets = family_of(model.config.model_type).lora_targets
        if not targets:
            raise UserError(f"tf-finetune has no default LoRA targets for {model.config.model_type} models; pass "
                            "--lora_target_modules with the names of the Dense layers to adapt.")
    alpha = 2 * config.lora_rank if config.lora_alpha is None else config.lora_alpha
    saved = head_modules(model) if config.modules_to_save is None else config.modules_to_save
    if list(targets) == [ALL_LINEAR]:
        targets = all_linear(model, saved)
    return LoraSettings(rank=config.lora_rank, alpha=float(alpha), dropout=config.lora_dropout or 0.0,
                        target_modules=tuple(targets), modules_to_save=tuple(saved))


def all_linear(model: tf_keras.Model, modules_to_save: Sequence[str]) -> list[str]:
    """PEFT's `all-linear`: the module path of every Dense layer but the vocabulary projection (a language model's
    output layer) and the modules trained whole (the task head, which PEFT leaves out for classifiers too)."""
    vocab_size = getattr(model.config, "vocab_size", None)
    return [module_path(dense) for _, _, dense in _dense_sites(model)
            if dense.units != vocab_size and not _within(module_path(dense), modules_to_save)]


def add_lora(model: tf_keras.Model, settings: LoraSettings) -> list[str]:
    """Wrap the target Dense layers of a built model in LoraDense and freeze everything but the adapters and the
    modules to save; returns the adapted module paths. Call it in the strategy's scope (it creates variables)."""
    sites = [(parent, attribute, dense) for parent, attribute, dense in _dense_sites(model)
             if matches(module_path(dense), settings.target_modules)]
    if not sites:
        names = sorted({module_path(dense).rsplit(".", 1)[-1] for _, _, dense in _dense_sites(model)})
        raise UserError(f"--lora_target_modules {' '.join(settings.target_modules)} matches no Dense layer of the "
                        f"model; its Dense layers are named {', '.join(names)}.")
    for _, _, dense in sites:
        if settings.rank > min(dense.kernel.shape):
            raise UserError(f"--lora_rank {settings.rank} is larger than {module_path(dense)} "
                            f"({dense.kernel.shape[0]} x {dense.kernel.shape[1]}); pass a rank of at most "
                            f"{min(dense.kernel.shape)}.")
    _check_modules_to_save(model, settings.modules_to_save)
    for parent, attribute, dense in sites:
        setattr(parent, attribute, LoraDense(dense, settings.rank, settings.scale, settings.dropout))
    _freeze_all_but(model, settings.modules_to_save)
    return [module_path(dense) for _, _, dense in sites]


def lora_layers(model: tf_keras.Model) -> list[LoraDense]:
    """The model's LoRA-wrapped layers, in the model's layer order."""
    return [layer for layer in model._flatten_layers(include_self=False) if isinstance(layer, LoraDense)]


@contextlib.contextmanager
def merged(model: tf_keras.Model) -> Iterator[tf_keras.Model]:
    """Inside the block the model is a plain transformers model: each adapter added into its base kernel and the
    base Dense back in its place. On leaving, the adapters and the original kernels are restored."""
    sites = _sites(model, LoraDense)
    originals = [wrapper.base.kernel.numpy() for _, _, wrapper in sites]
    merge_into_base(model)
    try:
        yield model
    finally:
        for (parent, attribute, wrapper), kernel in zip(sites, originals):
            wrapper.base.kernel.assign(kernel)
            setattr(parent, attribute, wrapper)


def merge_into_base(model: tf_keras.Model) -> None:
    """Add every adapter into its base kernel for good and put the base Dense layers back."""
    for parent, attribute, wrapper in _sites(model, LoraDense):
        wrapper.base.kernel.assign_add(tf.cast(wrapper.delta(), wrapper.base.kernel.dtype))
        setattr(parent, attribute, wrapper.base)


def head_modules(model: tf_keras.Model) -> list[str]:
    """The task head: the model's top-level layers with weights, other than the base model and a vocabulary
    projection (a language model's pretrained output layer), by module path."""
    main_layer = getattr(model, model.base_model_prefix, None)
    main_weights = {id(weight) for weight in main_layer.weights}
    vocab_size = getattr(model.config, "vocab_size", None)
    head = []
    for layer in model._flatten_layers(include_self=False, recursive=False):
        if layer is main_layer or not layer.weights:
            continue
        if isinstance(layer, tf_keras.layers.Dense) and layer.units == vocab_size:
            continue
        own = [weight for weight in layer.weights if id(weight) not in main_weights]
        if own:
            head.append(_common_path([pytorch_name(weight)[0] for weight in own]))
    return head


def parameter_counts(model: tf_keras.Model) -> tuple[int, int]:
    """(trainable, total) parameters, each shared variable counted once."""
    def count(weights: Sequence[tf.Variable]) -> int:
        return sum(int(np.prod(weight.shape)) for weight in {id(weight): weight for weight in weights}.values())

    return count(model.trainable_weights), count(model.weights)


def pytorch_name(weight: tf.Variable) -> tuple[str, TransposeType]:
    """The PyTorch state-dict name of a TF weight and how its value is transposed between the two."""
    return convert_tf_weight_name_to_pt_weight_name(weight.name, tf_weight_shape=weight.shape)


def module_path(layer: tf_keras.layers.Layer) -> str:
    """A layer's PyTorch module path, from the name of its first weight (`...query.weight` -> `...query`)."""
    return pytorch_name(layer.weights[0])[0].rsplit(".", 1)[0]


def matches(path: str, names: Sequence[str]) -> bool:
    """Whether a module path is, or ends with, one of the names at a `.` boundary (PEFT's rule)."""
    return any(path == name or path.endswith(f".{name}") for name in names)


def _within(path: str, names: Sequence[str]) -> bool:
    """Whether a module path lies in one of the named modules (the module itself or a part of it)."""
    parts = path.split(".")
    return any(matches(".".join(parts[:end]), names) for end in range(1, len(parts) + 1))


def _dense_sites(model: tf_keras.Model) -> list[tuple[tf_keras.layers.Layer, str, tf_keras.layers.Dense]]:
    return [site for site in _sites(model, tf_keras.layers.Dense) if site[2].built]


def _sites(model: tf_keras.Model, kind: type) -> list[tuple[tf_keras.layers.Layer, str, tf_keras.layers.Layer]]:
    """(parent, attribute, layer) for every layer of a kind held in an attribute of another layer."""
    sites = []
    for parent in model._flatten_layers(include_self=True):
        for attribute, value in list(vars(parent).items()):
            if isinstance(value, kind) and not attribute.startswith("_"):
                sites.append((parent, attribute, value))
    return sites


def _check_modules_to_save(model: tf_keras.Model, modules_to_save: Sequence[str]) -> None:
    paths = {pytorch_name(weight)[0].rsplit(".", 1)[0] for weight in model.weights}
    for name in modules_to_save:
        if not any(_within(path, [name]) for path in paths):
            top = sorted({path.split(".")[0] for path in paths})
            raise UserError(f"--modules_to_save {name} matches no module of the model; its top-level modules are "
                            f"{', '.join(top)}.")


def _freeze_all_but(model: tf_keras.Model, modules_to_save: Sequence[str]) -> None:
    """Freeze every layer owning weights except the adapters and the modules to save. Leaf layers are frozen, not
    their containers: a frozen container hides its trainable parts from `trainable_weights`."""
    def stays_trainable(layer: tf_keras.layers.Layer) -> bool:
        return isinstance(layer, LoraDense) or (
            bool(layer._trainable_weights) and _within(module_path(layer), modules_to_save))

    for layer in model._flatten_layers(include_self=False):
        if not layer._trainable_weights or stays_trainable(layer):
            continue
        if any(stays_trainable(part) for part in layer._flatten_layers(include_self=False)):
            raise UserError(f"cannot freeze {module_path(layer)} without freezing the trainable modules inside it; "
                            "name its parts in --modules_to_save instead.")
        layer.trainable = False


def _common_path(names: Sequence[str]) -> str:
    """The longest module path that every PyTorch weight name lies in."""
    parts = [name.split(".")[:-1] for name in names]
    common = []
    for level in zip(*parts):
        if len(set(level)) > 1:
            break
        common.append(level[0])
    return ".".join(common)
