"""What only the running process knows about a run (devices, strategy, versions, times), kept in run_info.json so
that `python -m tf_finetune.report` can rebuild the report later."""
from __future__ import annotations

import datetime
import os
import platform
from importlib import metadata
from typing import TYPE_CHECKING, Any, Optional

from tf_finetune.core.files import write_json
from tf_finetune.core.layout import RUN_INFO_FILE

if TYPE_CHECKING:
    import tensorflow as tf



def now() -> str:
    """The current time, UTC, ISO 8601 to the second."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def devices() -> list[str]:
    """This machine's TensorFlow devices, e.g. ["CPU:0", "GPU:0 (NVIDIA A100)"]."""
    import tensorflow as tf

    names = []
    for device in tf.config.list_physical_devices():
        name = f"{device.device_type}:{device.name.rsplit(':', 1)[-1]}"
        if device.device_type == "GPU":
            details = tf.config.experimental.get_device_details(device)
            name += f" ({details['device_name']})" if details.get("device_name") else ""
        names.append(name)
    return names


def run_info(strategy: "tf.distribute.Strategy", started_at: str, monitor: Optional[str],
             greater_is_better: Optional[bool], eval_runtime: Optional[float]) -> dict[str, Any]:
    """The facts of this process about a run that started at `started_at` and ends now: hardware, strategy, framework
    versions, times, and the result that picked the best epoch (`monitor`, None without evaluation)."""
    from tf_finetune.runtime.distribute import describe_strategy

    return {
        "started_at": started_at,
        "finished_at": now(),
        "eval_runtime": None if eval_runtime is None else round(eval_runtime, 3),
        "monitor": monitor,
        "greater_is_better": greater_is_better,
        "strategy": describe_strategy(strategy),
        "replicas": strategy.num_replicas_in_sync,
        "devices": devices(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": framework_versions(),
    }


def write_run_info(output_dir: str, info: dict[str, Any]) -> str:
    """Write run_info.json atomically; returns its path."""
    path = os.path.join(output_dir, RUN_INFO_FILE)
    write_json(path, info)
    return path


FRAMEWORKS = ("transformers", "tensorflow", "tf-keras", "datasets", "tf-finetune")


def framework_versions() -> dict[str, str]:
    """Installed versions of the libraries a run depends on (those that are installed)."""
    versions = {}
    for name in FRAMEWORKS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions
