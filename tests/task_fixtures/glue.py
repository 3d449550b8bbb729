"""The ten GLUE tasks on a tiny tree in the original GLUE layout."""
from __future__ import annotations

from functools import partial
from pathlib import Path

from glue_layout import write_glue_layout
from task_fixtures import Case, TinyModels
from tf_finetune.config import TrainConfig
from tf_finetune.tasks.glue import GLUE_TASKS


def glue_case(task: str, models: TinyModels, tmp_path: Path) -> Case:
    config = TrainConfig(task=task, model_name_or_path=str(models.bert), data_dir=str(write_glue_layout(tmp_path)),
                         do_predict=True)
    return Case(config, ["the film was very good"])


CASES = {task: partial(glue_case, task) for task in GLUE_TASKS}
