"""Metrics as `evaluate` modules: the bundled ones load offline; others come from a local path or the Hub."""
from __future__ import annotations

import errno
import functools
import os
from collections.abc import Iterator
from typing import Any

import evaluate
import huggingface_hub
import numpy as np

from tf_finetune.core.errors import UserError

_BUNDLED_DIR = os.path.dirname(os.path.abspath(__file__))


def list_metrics() -> list[str]:
    """Names of the bundled metrics: the NAME/NAME.py evaluate modules beside this file."""
    return sorted(
        name for name in os.listdir(_BUNDLED_DIR) if os.path.isfile(os.path.join(_BUNDLED_DIR, name, f"{name}.py"))
    )


def load_metric(name: str, config_name: str | None = None) -> evaluate.EvaluationModule:
    """Load a bundled metric by name, else a local metric directory or .py file, else a metric from the Hub."""
    if name in list_metrics():
        return _load(os.path.join(_BUNDLED_DIR, name), config_name)
    if os.path.exists(name):
        return _load(os.path.abspath(name), config_name)
    # evaluate 0.4.6 honours only HF_EVALUATE_OFFLINE; honour HF_HUB_OFFLINE too rather than wait on the network.
    evaluate_offline = evaluate.config.HF_EVALUATE_OFFLINE
    evaluate.config.HF_EVALUATE_OFFLINE = evaluate_offline or huggingface_hub.constants.HF_HUB_OFFLINE
    try:
        return _load(name, config_name)
    except (ConnectionError, FileNotFoundError) as err:
        raise UserError(
            f"metric {name!r} is not bundled ({', '.join(list_metrics())}), not a local path, and could not be "
            "loaded from the Hugging Face Hub (offline, unreachable or unknown there); "
            "pass a local path to an evaluate metric directory or .py file instead"
        ) from err
    finally:
        evaluate.config.HF_EVALUATE_OFFLINE = evaluate_offline


@functools.lru_cache(maxsize=None)
def _load(path: str, config_name: str | None) -> evaluate.EvaluationModule:
    """evaluate.load, once per (path, config); predictions are kept in memory, not in evaluate's disk cache."""
    try:
        return evaluate.load(path, config_name, keep_in_memory=True)
    except OSError as err:
        if err.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        raise UserError(
            f"cannot load metric {path!r}: evaluate must write to its cache but {err.filename} is not writable; "
            "set HF_HOME to a writable directory"
        ) from err


def compute_metrics(
    metric: evaluate.EvaluationModule, predictions: Any, references: Any, **kwargs: Any
) -> dict[str, float]:
    """`metric.compute(...)` as plain floats; per-label arrays become NAME_0, NAME_1, ... and nested dicts NAME_KEY."""
    return dict(_floats("", metric.compute(predictions=predictions, references=references, **kwargs)))


def _floats(prefix: str, value: Any) -> Iterator[tuple[str, float]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _floats(f"{prefix}_{key}" if prefix else str(key), item)
    elif np.ndim(value):
        for index, item in enumerate(np.ravel(value)):
            yield f"{prefix}_{index}", float(item)
    else:
        yield prefix, float(value)
