"""One conformance case per registered task, gathered from the modules of this package (one per task module).

A module defines `CASES`: task name -> a function (TinyModels, tmp_path) -> Case that writes the task's small data
files and returns the run to make. A new task is covered by a module here; tests/test_task_contract.py does the rest.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tf_finetune.config import TrainConfig


@dataclass
class TinyModels:
    """The tiny checkpoints the tests build: an encoder and a causal LM (each with its fast tokenizer)."""

    bert: Path
    gpt2: Path


@dataclass
class Case:
    """A task's conformance run: its TrainConfig and the flags the predict command answers with the saved model."""

    config: TrainConfig
    predict_args: list[str] = field(default_factory=list)


def _gather() -> dict[str, Callable[[TinyModels, Path], Case]]:
    cases: dict[str, Callable[[TinyModels, Path], Case]] = {}
    for module in pkgutil.iter_modules(__path__):
        cases.update(importlib.import_module(f"{__name__}.{module.name}").CASES)
    return cases


CASES = _gather()
