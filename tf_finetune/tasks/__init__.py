"""The task registry: `register_task` adds a task, `get_task(name)` finds it, `list_tasks()` lists them.

Every module of this package is imported the first time the registry is asked, so a new task module registers
itself by being here; no list of modules is kept.
"""
from __future__ import annotations

import difflib
import importlib
import pkgutil
from typing import Optional

from tf_finetune.errors import UserError
from tf_finetune.tasks.base import Task

_REGISTRY: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    """Add a task under its name; names are unique."""
    if task.name in _REGISTRY:
        raise ValueError(f"task {task.name!r} is registered twice")
    _REGISTRY[task.name] = task
    return task


def _load_task_modules() -> None:
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


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


def describe_tasks() -> str:
    """One paragraph per task: name, description, data formats and metrics (what `--list_tasks` prints)."""
    blocks = []
    for name in list_tasks():
        task = _REGISTRY[name]
        blocks.append(f"{name}\n  {task.description}\n  data: {task.data_formats}\n  metrics: {task.reported_metrics}")
    return "\n".join(blocks)


def pipeline_tags() -> list[str]:
    """What `python -m tf_finetune.predict --task` takes: the tasks' Hub pipeline tags, or their own predict names."""
    _load_task_modules()
    return sorted({_predict_name(task) for task in _REGISTRY.values()})


def task_for_pipeline(tag: str) -> Task:
    """A task that predicts for a pipeline tag or predict name (tasks sharing one share their prediction code)."""
    _load_task_modules()
    return next(_REGISTRY[name] for name in sorted(_REGISTRY) if _predict_name(_REGISTRY[name]) == tag)


def _predict_name(task: Task) -> str:
    return task.predict_name or task.pipeline_tag


def task_for_architectures(architectures: Optional[list[str]]) -> Optional[Task]:
    """A task whose Auto class builds one of the saved architectures (e.g. BertForMaskedLM -> mlm), or None."""
    _load_task_modules()
    for architecture in architectures or []:
        for name in sorted(_REGISTRY):
            if _REGISTRY[name].builds_architecture(architecture):
                return _REGISTRY[name]
    return None
