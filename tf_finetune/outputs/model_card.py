"""Model cards: Hub metadata (model-index) and a readable summary of a finished run."""
from __future__ import annotations

import numbers
import os
import re
from typing import Any, Mapping, Optional

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from tf_finetune.config import SECRET_FIELDS
from tf_finetune.core.files import read_json, write_text
from tf_finetune.core.layout import (
    MODEL_CARD_FILE,
    MODEL_CONFIG_FILE,
    PYTORCH_DIR,
    RESULTS_FILE,
    RUN_CONFIG_FILE,
    RUN_INFO_FILE,
)
from tf_finetune.core.results import validation_metrics
from tf_finetune.hub.client import is_repo_id
from tf_finetune.outputs.run_info import framework_versions
from tf_finetune.tasks import hyperparameters


def write_model_card(output_dir: str, *, repo_id: str, base_model: Optional[str], task_name: Optional[str],
                     dataset_name: Optional[str], metrics: Mapping[str, Any], hyperparameters: Mapping[str, Any],
                     task_type: Optional[str] = None, dataset_config: Optional[str] = None,
                     license: Optional[str] = None, method: Optional[str] = None,
                     main_metric: Optional[str] = None, pytorch_subfolder: Optional[str] = None,
                     auto_class: str = "TFAutoModel") -> str:
    """Write `output_dir/README.md`: Hub metadata (model-index with the eval metrics) and a readable summary.

    Args:
        repo_id: the Hub repository the card describes.
        base_model: the Hub id of the model fine-tuned (None: "a local checkpoint"; a local path never goes into a
            card, see base_model_hub_id).
        task_name: the tf-finetune task, e.g. "sst2".
        dataset_name: the Hub dataset trained on, if any.
        metrics: results as in all_results.json; the validation metrics (core.results) go into the model-index.
        hyperparameters: the run's settings; secrets (e.g. hub_token) are left out.
        task_type: the Hub task id, e.g. "text-classification" (default: task_name).
        dataset_config: the dataset's configuration name.
        license: the license id, when known.
        method: a paragraph on how it was trained, when not in full (e.g. LoRA's settings).
        main_metric: the result that picked the best epoch (e.g. eval_accuracy): first in the model-index.
        pytorch_subfolder: the repository folder holding PyTorch weights (--hub_export pytorch), if any.
        auto_class: the transformers TF Auto class that loads the model with its head (the task's).

    Returns the path written. The file is replaced atomically.
    """
    if base_model is not None and not is_hub_id(base_model):
        raise ValueError(f"base_model must be a Hub id, got the local path {base_model}")
    dataset = dataset_name or task_name or "custom"
    scores = {key.removeprefix("eval_"): float(value) for key, value in validation_metrics(metrics).items()}
    first = (main_metric or "")[len("eval_"):] if (main_metric or "").startswith("eval_") else main_metric
    names = sorted(scores, key=lambda name: name != first)  # stable: the others keep their order
    eval_results = [
        EvalResult(task_type=task_type or task_name or "other", task_name=task_name, dataset_type=dataset,
                   dataset_name=dataset, dataset_config=dataset_config, dataset_split="validation",
                   metric_type=name, metric_name=name, metric_value=scores[name])
        for name in names
    ]
    card_data = ModelCardData(
        license=license, base_model=base_model, library_name="transformers", pipeline_tag=task_type,
        tags=[tag for tag in ("tensorflow", "tf-keras", "tf-finetune", task_name) if tag],
        datasets=[dataset_name] if dataset_name else None,
        model_name=repo_id.split("/")[-1], eval_results=eval_results or None,
    )
    body = _card_body(repo_id, base_model, task_name, dataset_name, metrics, hyperparameters, method,
                      _usage(repo_id, auto_class, pytorch_subfolder))
    card = ModelCard(f"---\n{card_data.to_yaml()}\n---\n{body}")
    path = os.path.join(output_dir, MODEL_CARD_FILE)
    write_text(path, str(card))
    return path


def is_hub_id(name: str, namespaced: bool = False) -> bool:
    """Whether a model name is a Hub repository id (hub.client.is_repo_id) rather than a local directory."""
    return not os.path.exists(name) and is_repo_id(name, namespaced)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _usage(repo_id: str, auto_class: str, pytorch_subfolder: Optional[str]) -> str:
    """How to load the model with its head: with TensorFlow (transformers 4.x), and with PyTorch when the repository
    has weights for it (transformers v5 has no TensorFlow)."""
    tf_code = f'from transformers import {auto_class}\n\nmodel = {auto_class}.from_pretrained("{repo_id}")'
    text = f"With TensorFlow (transformers 4.x):\n\n```python\n{tf_code}\n```"
    if pytorch_subfolder:
        pt_class = auto_class[len("TF"):]
        pt_code = (f'from transformers import {pt_class}\n\nmodel = {pt_class}.from_pretrained("{repo_id}", '
                   f'subfolder="{pytorch_subfolder}")')
        text += f"\n\nWith PyTorch (transformers 4.x or v5):\n\n```python\n{pt_code}\n```"
    return text


def _card_body(repo_id: str, base_model: Optional[str], task_name: Optional[str], dataset_name: Optional[str],
               metrics: Mapping[str, Any], hyperparameters: Mapping[str, Any], method: Optional[str] = None,
               usage: str = "") -> str:
    """The Markdown part of the model card."""
    model = f"[{base_model}](https://huggingface.co/{base_model})" if base_model else "a local checkpoint"
    origin = f"a fine-tuned version of {model}"
    data = f" on the [{dataset_name}](https://huggingface.co/datasets/{dataset_name}) dataset" if dataset_name else ""
    task = f" for the {task_name} task" if task_name else ""
    results = {key: value for key, value in metrics.items() if _is_number(value)}
    settings = {key: value for key, value in hyperparameters.items() if not _is_secret(key) and value is not None}
    versions = [f"- {name} {version}" for name, version in framework_versions().items()]
    sections = [
        f"# {repo_id.split('/')[-1]}",
        f"## Model description\n\nThis model is {origin}{data}{task}, trained with TensorFlow/Keras by tf-finetune."
        + (f"\n\n{method}" if method else ""),
        "## Intended use\n\n"
        f"Use it for {task_name or 'the task it was trained on'} on text like its training data. It was evaluated "
        "only on the validation data below: check it on your own data before relying on it.",
        "## How to use\n\n" + usage,
        "## Training hyperparameters\n\n" + _table(("Hyperparameter", "Value"), settings),
        "## Results\n\n" + (_table(("Metric", "Value"), results) if results else "No evaluation results."),
        "## Framework versions\n\n" + "\n".join(versions),
    ]
    return "\n\n".join(sections) + "\n"


def _is_secret(key: str) -> bool:
    return key in SECRET_FIELDS or key.endswith("token")


def _table(header: tuple[str, str], rows: Mapping[str, Any]) -> str:
    """A two-column Markdown table."""
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    for key, value in rows.items():
        shown = f"{value:.4g}" if _is_number(value) and not isinstance(value, numbers.Integral) else str(value)
        lines.append(f"| {key} | {shown.replace('|', '&#124;')} |")
    return "\n".join(lines)


def write_model_card_for_run(output_dir: str, repo_id: str) -> Optional[str]:
    """Write the model card of a finished run from its run_config.json, all_results.json and run_info.json (None if
    it has neither of the first two). Only the settings that apply to the run's task are listed."""
    from tf_finetune.models.adapters import describe_lora
    from tf_finetune.tasks import get_task, list_tasks

    paths = [os.path.join(output_dir, name) for name in (RESULTS_FILE, RUN_CONFIG_FILE, RUN_INFO_FILE)]
    results, run_config, info = (read_json(path) if os.path.isfile(path) else None for path in paths)
    if results is None and run_config is None:
        return None
    run_config, results, info = run_config or {}, results or {}, info or {}
    task = get_task(run_config["task"]) if run_config.get("task") in list_tasks() else None
    dataset, dataset_config = (task.hub_dataset(run_config) if task else
                               (run_config.get("dataset_name"), run_config.get("dataset_config_name")))
    base_model = run_config.get("base_model_id") or base_model_hub_id(run_config.get("model_name_or_path"))
    return write_model_card(output_dir, repo_id=repo_id, base_model=base_model, task_name=run_config.get("task"),
                            dataset_name=dataset, dataset_config=dataset_config, metrics=results,
                            hyperparameters=hyperparameters(run_config, results.get("best_hyperparameters")), task_type=task.pipeline_tag if task else None,
                            method=describe_lora(run_config, results), main_metric=info.get("monitor"),
                            pytorch_subfolder=PYTORCH_DIR if os.path.isdir(os.path.join(output_dir, PYTORCH_DIR))
                            else None, auto_class=task.auto_model_class if task else "TFAutoModel")


def base_model_hub_id(name_or_path: Optional[str]) -> Optional[str]:
    """The Hub id of a checkpoint: itself when it is one; for a local folder, the id its own model card loads it by
    (a `from_pretrained('<id>')` whose name is the card's title), else its config's `_name_or_path` when that is a
    Hub id; None when neither says."""
    if not name_or_path:
        return None
    if is_hub_id(name_or_path):
        return name_or_path
    card = os.path.join(name_or_path, MODEL_CARD_FILE)
    if os.path.isfile(card):
        text = open(card, encoding="utf-8", errors="replace").read()
        title = re.search(r"^# +(\S+)\s*$", text, flags=re.MULTILINE)
        for found in re.findall(r"""\(\s*['"]([\w.-]+/[\w.-]+)['"]""", text):
            if title and found.split("/")[-1] == title.group(1) and is_hub_id(found):
                return found
    config = os.path.join(name_or_path, MODEL_CONFIG_FILE)
    named = read_json(config).get("_name_or_path") if os.path.isfile(config) else None
    return named if named and is_hub_id(named, namespaced=True) else None  # a bare name may be a folder's
