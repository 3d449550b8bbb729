"""The search space: KerasTuner hyperparameters named after TrainConfig fields, checked before any trial."""
from __future__ import annotations

import dataclasses
import typing
from typing import Any

import keras_tuner

from tf_finetune.config import TrainConfig, field_fact
from tf_finetune.core.errors import UserError, did_you_mean
from tf_finetune.core.files import read_mapping_file

EPOCHS = "num_train_epochs"


BATCH_SIZE = "per_device_train_batch_size"


DEFAULT_SPACE: dict[str, dict[str, Any]] = {
    "learning_rate": {"type": "float", "min_value": 1e-5, "max_value": 1e-4, "sampling": "log"},
    BATCH_SIZE: {"type": "choice", "values": [8, 16, 32]},
    EPOCHS: {"type": "int", "min_value": 1, "max_value": 3},
    "warmup_ratio": {"type": "float", "min_value": 0.0, "max_value": 0.2},
    "weight_decay": {"type": "float", "min_value": 0.0, "max_value": 0.1},
}


_HP_METHODS = {"float": "Float", "int": "Int", "choice": "Choice", "boolean": "Boolean", "fixed": "Fixed"}


_SCALAR_TYPES = (bool, int, float, str)


@dataclasses.dataclass(frozen=True)
class Objective:
    """The validation metric a search optimises (`eval_*` name) and its direction."""

    name: str
    greater_is_better: bool

    @property
    def direction(self) -> str:
        return "max" if self.greater_is_better else "min"


def build_search_space(config: TrainConfig) -> keras_tuner.HyperParameters:
    """The search space: DEFAULT_SPACE, or the `tune_space` file's, which replaces it. Bad specs raise UserError.

    Every bound of every hyperparameter (choices, range ends) must pass TrainConfig's validation.
    """
    specs, source = (_read_space_file(config.tune_space), config.tune_space) if config.tune_space else \
        (DEFAULT_SPACE, "default")
    hints = typing.get_type_hints(TrainConfig)
    space = keras_tuner.HyperParameters()
    for name, spec in specs.items():
        if name not in hints:
            raise UserError(f"search space {source}: unknown option '{name}'; {did_you_mean(name, hints)}keys are TrainConfig field names "
                            "(the --flags without dashes).")
        if not field_fact(name, "tunable") or not _field_types(hints[name]):
            raise UserError(f"search space {source}: '{name}' cannot be tuned; tune numbers such as learning_rate, "
                            f"{BATCH_SIZE}, {EPOCHS}, warmup_ratio or weight_decay.")
        if not isinstance(spec, dict) or spec.get("type") not in _HP_METHODS:
            raise UserError(f"search space {source}: '{name}' needs a mapping whose 'type' is one of "
                            f"{', '.join(_HP_METHODS)}; got {spec!r}.")
        try:
            getattr(space, _HP_METHODS[spec["type"]])(name, **{k: v for k, v in spec.items() if k != "type"})
        except (TypeError, ValueError) as error:
            raise UserError(f"search space {source}: '{name}': {str(error).splitlines()[0]}") from error
        for value in _candidates(_find(space, name)):
            _check_value(config, name, value, _field_types(hints[name]), source)
    return space


def largest(space: keras_tuner.HyperParameters, name: str, default: Any) -> Any:
    """The largest value a hyperparameter of the space can take, or `default` when the space does not tune it."""
    return max(_candidates(_find(space, name))) if name in space else default


def _read_space_file(path: str) -> dict[str, Any]:
    specs = read_mapping_file(path, "search space file", "--tune_space")
    if not specs:
        raise UserError(f"search space file {path} must map option names to specs, e.g. {{\"learning_rate\": "
                        '{"type": "float", "min_value": 1e-5, "max_value": 1e-4, "sampling": "log"}}.')
    return specs


def _field_types(hint: Any) -> tuple[type, ...]:
    """The scalar types a TrainConfig field accepts (empty for lists and other non-scalars)."""
    types = tuple(t for t in (typing.get_args(hint) or (hint,)) if t is not type(None))
    return types if all(t in _SCALAR_TYPES for t in types) else ()


def _find(space: keras_tuner.HyperParameters, name: str) -> keras_tuner.engine.hyperparameters.HyperParameter:
    return next(hp for hp in space.space if hp.name == name)


def _candidates(hp: keras_tuner.engine.hyperparameters.HyperParameter) -> list[Any]:
    """The values that bound what a hyperparameter can take: its choices, or its range's ends."""
    if isinstance(hp, keras_tuner.engine.hyperparameters.Choice):
        return list(hp.values)
    if isinstance(hp, keras_tuner.engine.hyperparameters.Fixed):
        return [hp.value]
    if isinstance(hp, keras_tuner.engine.hyperparameters.Boolean):
        return [False, True]
    return [hp.min_value, hp.max_value]


def _check_value(config: TrainConfig, name: str, value: Any, types: tuple[type, ...], source: str) -> None:
    accepted = (float in types and isinstance(value, (int, float))) or type(value) in types
    if not accepted or (isinstance(value, bool) and bool not in types):
        raise UserError(f"search space {source}: '{name}' takes {' or '.join(t.__name__ for t in types)} values, "
                        f"got {value!r}.")
    try:
        config.replace(**{name: value}).validate()
    except UserError as error:
        raise UserError(f"search space {source}: '{name}' can take {value!r}, which is invalid: {error}") from error
