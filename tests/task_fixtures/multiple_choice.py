"""SWAG-style CSV files whose right ending repeats a cue word of the context (learnable by a tiny model)."""
from __future__ import annotations

import csv
import random
from pathlib import Path

from task_fixtures import Case, TinyModels
from tf_finetune.config import TrainConfig

NOUNS = ["movie", "film", "plot", "story", "music", "scene"]
CUES, DISTRACTORS = ["good", "great", "fine", "lovely", "superb"], ["bad", "awful", "poor", "dull", "boring"]


def cue_rows(count: int, seed: int = 0, num_choices: int = 4) -> list[dict]:
    """SWAG-style rows: sent1 holds a cue word, which the right ending (label i % num_choices) repeats; the other
    endings are words no context holds."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        cue, label = rng.choice(CUES), i % num_choices
        endings = rng.sample(DISTRACTORS, num_choices - 1)
        endings.insert(label, cue)
        row = {"sent1": f"the {rng.choice(NOUNS)} was very {cue}.", "sent2": "it was really"}
        row.update({f"ending{j}": ending for j, ending in enumerate(endings)})
        rows.append({**row, "label": label})
    return rows


def write_rows(path: Path, rows: list[dict], delimiter: str = ",", header: bool = True) -> str:
    """Rows as CSV (or TSV with delimiter "\\t"), with or without the header row; returns the path."""
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]), delimiter=delimiter)
        if header:
            writer.writeheader()
        writer.writerows(rows)
    return str(path)


def write_swag_files(directory: Path, sizes: dict[str, int]) -> dict[str, str]:
    """One SWAG-style CSV per split name, `sizes[name]` rows each (seeded by position)."""
    return {name: write_rows(Path(directory) / f"{name}.csv", cue_rows(count, seed))
            for seed, (name, count) in enumerate(sizes.items())}


def multiple_choice_case(models: TinyModels, tmp_path: Path) -> Case:
    paths = write_swag_files(tmp_path, {"train": 16, "valid": 8, "test": 4})
    config = TrainConfig(task="multiple-choice", model_name_or_path=str(models.bert), train_file=paths["train"],
                         validation_file=paths["valid"], test_file=paths["test"], do_predict=True)
    return Case(config, ["the man sat on the", "--choices", "mat", "sky"])


CASES = {"multiple-choice": multiple_choice_case}
