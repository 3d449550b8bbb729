"""The task registry: `get_task(name)` finds a task, `list_tasks()` lists them.

Every module of this package is imported the first time the registry is asked, and the tasks in its `TASKS` tuple
are registered: a new task module registers itself by being here and declaring `TASKS`; no list of modules is kept,
and no task module imports the registry. A task defined elsewhere (a notebook's, a test's) joins with
`register_task`, or for a while with `registered`:

    with registered(MyTask()):
        train(TrainConfig(task="my-task", ...))
"""
from __future__ import annotations

import importlib
import pkgutil
from contextlib import contextmanager
from typing import Any, Iterator, Mapping, Optional

from tf_finetune.config import field_fact, fields_where
from tf_finetune.core.errors import UserError, did_you_mean
from tf_finetune.tasks.base import Task

_REGISTRY: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    """Add a task under its name; names are unique."""
    if task.name in _REGISTRY:
        raise ValueError(f"task {task.name!r} is registered twice")
    _REGISTRY[task.name] = task
    return task


@contextmanager
def registered(task: Task) -> Iterator[Task]:
    """The task registered inside the `with` block, and no longer after it."""
    register_task(task)
    try:
        yield task
    finally:
        del _REGISTRY[task.name]


def _load_task_modules() -> None:
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for task in getattr(module, "TASKS", ()):
            if _REGISTRY.get(task.name) is not task:
                register_task(task)


def list_tasks() -> list[str]:
    """Names of all registered tasks, sorted."""
    _load_task_modules()
    return sorted(_REGISTRY)


def get_task(name: str) -> Task:
    """The registered task called `name`; an unknown name gets a did-you-mean error."""
    _load_task_modules()
    if name in _REGISTRY:
        return _REGISTRY[name]
    hint = did_you_mean(name.lower(), _REGISTRY, cutoff=0.5)
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


def field_applies(name: str, values: dict[str, Any]) -> bool:
    """Whether the TrainConfig field `name` applies to a run with these field values (a run_config.json): an option
    of some tasks (Task.option_fields) only to their runs, and a field that needs another (its `needs` fact) only
    when that one is set."""
    _load_task_modules()
    owners = [task.name for task in _REGISTRY.values() if name in task.option_fields]
    needs = field_fact(name, "needs")
    return (not owners or values.get("task") in owners) and (needs is None or bool(values.get(needs)))


def hyperparameters(values: Mapping[str, Any], tuned: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """A run's hyperparameters, as its model card, report and trackers list them: the set values (in `values`, a
    run's settings) of the fields marked hyperparameter that apply to the run, then the values a search `tuned`."""
    return {**{name: values[name] for name in fields_where("hyperparameter")
               if values.get(name) is not None and field_applies(name, values)}, **(tuned or {})}
