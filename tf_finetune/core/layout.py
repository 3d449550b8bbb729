"""The run folder: the name of every file and folder a run writes at its top, and what happens to each.

Every module names these entries through this module. What `--overwrite_output_dir` removes and what a Hub upload
leaves out are read from `ENTRIES`, so a new output written under a new name has to be added here, and then is
removed and uploaded like the others (tests/test_layout.py fails on a file a run writes that is not here).
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Optional

# Written by every training run
RUN_CONFIG_FILE = "run_config.json"  # the exact configuration of the run (no secrets), reusable with --config
RESULTS_FILE = "all_results.json"  # the final results (training, evaluation, baseline): a finished run has one
EVAL_RESULTS_FILE = "eval_results.json"  # the final evaluation's results alone
HISTORY_FILE = "history.json"  # one row of results per epoch
HISTORY_CSV_FILE = "history.csv"  # the same rows as CSV
LOG_HISTORY_FILE = "log_history.json"  # a record every --logging_steps optimizer steps (training/step_log.py)
CONFUSION_MATRIX_FILE = "eval_confusion_matrix.json"  # classification: the final validation confusion matrix
RUN_INFO_FILE = "run_info.json"  # what only the process knew: devices, strategy, versions, times
CURVES_FILE = "training_curves.png"  # the report's curves
REPORT_MD_FILE = "report.md"  # the run's report, in Markdown
REPORT_HTML_FILE = "report.html"  # the run's report, as one HTML page
MODEL_CARD_FILE = "README.md"  # the model card: Hub metadata (model-index) and a summary of the run
MODEL_CONFIG_FILE = "config.json"  # the model's transformers configuration: save_pretrained folders have one
# What save_pretrained writes besides config.json: TF weights (sharded ones with an index) and the tokenizer's files
MODEL_FILES = ("tf_model*.h5", "tf_model.h5.index.json", "generation_config.json", "tokenizer*.json",
               "special_tokens_map.json", "added_tokens.json", "vocab.*", "merges.txt", "*.model", "chat_template.*")
CHECKPOINT_DIR = "checkpoint"  # resumable state: checkpoint-<step> folders and the best epoch's weights
ADAPTER_DIR = "adapter"  # LoRA runs: the adapter in the PEFT format
# --hub_export pytorch: PyTorch weights, loaded with from_pretrained(..., subfolder="pytorch"); a folder of its own,
# because transformers' TF from_pretrained prefers a model.safetensors beside tf_model.h5 and cannot load PyTorch ones
PYTORCH_DIR = "pytorch"
PREDICTIONS_PREFIX = "predict_results_"  # --do_predict: predict_results_<task>.<txt|json>
GENERATIONS_PREFIX = "generations_"  # --generation_eval: generations_epoch<k>.jsonl
# Trackers (training/trackers.py)
TENSORBOARD_DIR = "runs"  # the default --logging_dir: train/, eval/, the HParams session, a search's trial_<id>/
MLFLOW_DIR = "mlruns"  # the local MLflow store without MLFLOW_TRACKING_URI; it holds a copy of the model
WANDB_DIR = "wandb"  # offline W&B runs
# Written by a search (tuning/)
TUNING_DIR = "tuning"  # the default --tune_dir: KerasTuner's trials and SEARCH_FILE
SEARCH_FILE = "search.json"  # in the tune_dir: the settings of the search it holds, to resume only the same search
TUNING_RESULTS_FILE = "tuning_results.json"  # every trial: values, status, score, objective per epoch
TUNING_RESULTS_CSV_FILE = "tuning_results.csv"  # the same trials as CSV, without the per-epoch scores
# Written by `python -m tf_finetune.report` comparing a search's trials (or, in a common parent folder, runs)
COMPARISON_CURVES_FILE = "comparison_curves.png"
COMPARISON_MD_FILE = "comparison.md"
COMPARISON_HTML_FILE = "comparison.html"
TEMPORARY = (".tmp*", ".old-*")  # atomic writes' files and folders in the making (core/files.py), anywhere


def predictions_file(task: str, extension: str) -> str:
    """The name of a task's test predictions, e.g. predict_results_sst2.txt."""
    return f"{PREDICTIONS_PREFIX}{task}.{extension}"


def generations_file(epoch: int) -> str:
    """The name of the answers generated after epoch `epoch` (1-based)."""
    return f"{GENERATIONS_PREFIX}epoch{epoch}.jsonl"


@dataclass(frozen=True)
class Entry:
    """A file or folder at the top of a run folder, or a family of them (a glob pattern)."""

    pattern: str
    # --overwrite_output_dir removes it: an earlier run's output must not survive beside the new run's
    overwritten: bool
    # A Hub upload includes it (resumable and search state, local stores and temporaries stay home)
    uploaded: bool
    folder: bool = False


def _outputs(*patterns: str, folder: bool = False) -> tuple[Entry, ...]:
    return tuple(Entry(pattern, overwritten=True, uploaded=True, folder=folder) for pattern in patterns)


ENTRIES = (
    *_outputs(RUN_CONFIG_FILE, RESULTS_FILE, EVAL_RESULTS_FILE, HISTORY_FILE, HISTORY_CSV_FILE, LOG_HISTORY_FILE,
              CONFUSION_MATRIX_FILE, RUN_INFO_FILE, CURVES_FILE, REPORT_MD_FILE, REPORT_HTML_FILE, MODEL_CARD_FILE,
              MODEL_CONFIG_FILE, *MODEL_FILES, PREDICTIONS_PREFIX + "*", GENERATIONS_PREFIX + "*"),
    *_outputs(ADAPTER_DIR, PYTORCH_DIR, folder=True),
    Entry(CHECKPOINT_DIR, overwritten=True, uploaded=False, folder=True),
    # The run's own TensorBoard logs are removed by trackers.remove_run_logs: a search's trials share the folder.
    Entry(TENSORBOARD_DIR, overwritten=False, uploaded=True, folder=True),
    # Stores that keep every run, as MLflow and W&B do.
    Entry(MLFLOW_DIR, overwritten=False, uploaded=False, folder=True),
    Entry(WANDB_DIR, overwritten=False, uploaded=False, folder=True),
    # A search rewrites its own results; the retraining of its best values (an overwriting run) keeps them.
    Entry(TUNING_DIR, overwritten=False, uploaded=False, folder=True),
    Entry(TUNING_RESULTS_FILE, overwritten=False, uploaded=True),
    Entry(TUNING_RESULTS_CSV_FILE, overwritten=False, uploaded=True),
    Entry(COMPARISON_CURVES_FILE, overwritten=False, uploaded=True),
    Entry(COMPARISON_MD_FILE, overwritten=False, uploaded=True),
    Entry(COMPARISON_HTML_FILE, overwritten=False, uploaded=True),
    *(Entry(pattern, overwritten=False, uploaded=False) for pattern in TEMPORARY),
)


def entry_of(name: str) -> Optional[Entry]:
    """The entry a top-level name of a run folder belongs to (None: not a name a run writes)."""
    return next((entry for entry in ENTRIES if fnmatch.fnmatchcase(name, entry.pattern)), None)


def upload_ignore_patterns() -> tuple[str, ...]:
    """Glob patterns (as `HfApi.upload_folder` takes them) of what an upload leaves out."""
    left_out = tuple(entry.pattern + ("/**" if entry.folder else "") for entry in ENTRIES if not entry.uploaded)
    return (*left_out, *(f"**/{pattern}" for pattern in TEMPORARY))  # temporaries inside folders (e.g. pytorch/) too
