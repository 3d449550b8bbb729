"""A search's results: the trials table, tuning_results.json/.csv and the best hyperparameters."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Optional

import keras_tuner
import numpy as np

from tf_finetune.config import TrainConfig
from tf_finetune.core.files import write_csv, write_json
from tf_finetune.core.layout import TUNING_RESULTS_CSV_FILE, TUNING_RESULTS_FILE
from tf_finetune.tuning.space import EPOCHS

if TYPE_CHECKING:
    from tf_finetune.tuning.tuner import FineTuneTuner



def config_values(values: dict[str, Any]) -> dict[str, Any]:
    """TrainConfig fields from a trial's hyperparameter values (Hyperband's `tuner/epochs` is the epoch count).

    Values become plain Python numbers: the Gaussian process proposes NumPy float64s, which TensorFlow would keep as
    float64 and then refuse to multiply with float32 weights (weight decay).
    """
    fields = {name: value.item() if isinstance(value, np.generic) else value for name, value in values.items()
              if not name.startswith("tuner/")}
    if "tuner/epochs" in values:
        fields[EPOCHS] = values["tuner/epochs"]
    return fields


def best_hyperparameters(tuner: keras_tuner.Tuner) -> Optional[dict[str, Any]]:
    """The best completed trial's values as TrainConfig fields (None when no trial completed)."""
    completed = [t for t in tuner.oracle.get_best_trials(1) if t.status == "COMPLETED"]
    return config_values(completed[0].hyperparameters.values) if completed else None


def trial_rows(tuner: keras_tuner.Tuner) -> list[dict[str, Any]]:
    """One row per trial, best first (trials without a score last): id, status, score, best epoch, values."""
    objective = tuner.oracle.objective.name
    trials = tuner.oracle.get_best_trials(len(tuner.oracle.trials))
    rows = []
    for trial in trials:
        scored = trial.status == "COMPLETED"
        history = [obs.mean() for obs in trial.metrics.get_history(objective)] if trial.metrics.exists(objective) \
            else []
        row = {"trial_id": trial.trial_id, "status": trial.status,
               "score": float(trial.score) if scored else None,
               "best_epoch": trial.best_step + 1 if scored else None,
               **config_values(trial.hyperparameters.values),
               "history": [float(value) for value in history]}
        if trial.message:
            row["error"] = trial.message.strip().splitlines()[-1]
        rows.append(row)
    return rows


def write_results(config: TrainConfig, tuner: "FineTuneTuner", best: Optional[dict[str, Any]]) -> None:
    """Print the trials table and write tuning_results.json and tuning_results.csv into output_dir."""
    rows = trial_rows(tuner)
    write_json(os.path.join(config.output_dir, TUNING_RESULTS_FILE), {
        "tuner": config.tune, "objective": tuner.objective.name, "direction": tuner.objective.direction,
        "train_samples": tuner.train_samples, "best_hyperparameters": best, "trials": rows})
    columns = list(dict.fromkeys(key for row in rows for key in row if key not in ("history", "error")))
    write_csv(os.path.join(config.output_dir, TUNING_RESULTS_CSV_FILE), rows, columns)
    print(f"Trials by {tuner.objective.name} ({tuner.objective.direction}), best first:")
    print(format_table(rows, columns))


def format_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A plain-text table with aligned columns."""
    def cell(value: Any) -> str:
        if value is None:
            return "-"
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    cells = [columns, *[[cell(row.get(column)) for column in columns] for row in rows]]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = ("  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)) for line in cells)
    return "\n".join(line.rstrip() for line in lines)
