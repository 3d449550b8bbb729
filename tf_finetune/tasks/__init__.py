"""The task registry: `register_task` adds a task, `get_task(name)` finds it, `list_tasks()` lists them."""
from __future__ import annotations

import difflib
import importlib

from tf_finetune.errors import UserError
from tf_finetune.tasks.base import Task

_REGISTRY: dict[str, Task] = {}
_TASK_MODULES = ("tf_finetune.tasks.glue", "tf_finetune.tasks.text_classification",
                 "tf_finetune.tasks.language_modeling")


def register_task(task: Task) -> Task:
    """Add a task under its name; names are unique."""
    if task.name in _REGISTRY:
        raise ValueError(f"task {task.name!r} is registered twice")
    _REGISTRY[task.name] = task
    return task


def _load_task_modules() -> None:
    for module in _TASK_MODULES:
        importlib.import_module(module)


def list_tasks() -> list[str]:
    """Names of all registered tasks, sorted."""
    _load_task_modules()
    return sorted(_REGISTRY)


def get_task(name: str) -> Task:
    """The registered task called `name`; an unknown name gets a did-you-mean error."""
    _load_task_modules()
    if name in _REGISTRY:
        return _REGISTRY[name]
    close = difflib.get_close_matches(name.lower(), _REGISTRY, n=1, cutoff=0.5)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise UserError(f"unknown task '{name}'; {hint}known tasks: {', '.join(sorted(_REGISTRY))}.")
