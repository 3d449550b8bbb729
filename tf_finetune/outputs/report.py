"""Run reports and comparisons: curves, tables and results read back from run folders (no TensorFlow)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from tf_finetune.config import fields_where
from tf_finetune.core.errors import UserError
from tf_finetune.core.files import read_json, write_text
from tf_finetune.core.layout import (
    COMPARISON_CURVES_FILE,
    COMPARISON_HTML_FILE,
    COMPARISON_MD_FILE,
    CONFUSION_MATRIX_FILE,
    CURVES_FILE,
    HISTORY_FILE,
    LOG_HISTORY_FILE,
    REPORT_HTML_FILE,
    REPORT_MD_FILE,
    RESULTS_FILE,
    RUN_CONFIG_FILE,
    RUN_INFO_FILE,
    TUNING_RESULTS_FILE,
)
from tf_finetune.core.results import BASELINE_PREFIX, validation_metrics
from tf_finetune.outputs.documents import Image, Section, Table, to_html, to_markdown
from tf_finetune.outputs.plots import curve_names, curve_panels, overlaid_panels, plot_panels
from tf_finetune.tasks import hyperparameters

_RUN_FILES = (RUN_CONFIG_FILE, RESULTS_FILE)


@dataclass
class RunFolder:
    """What a run folder holds (files that are missing read as empty)."""

    path: str
    config: dict[str, Any]
    results: dict[str, Any]
    history: list[dict[str, Any]]
    log_history: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    confusion: Optional[dict[str, Any]] = None

    @property
    def name(self) -> str:
        return os.path.basename(os.path.abspath(self.path))

    @property
    def baselines(self) -> dict[str, float]:
        """Baseline results (`baseline_eval_x`) under the fine-tuned result's key (`eval_x`)."""
        return {key[len(BASELINE_PREFIX):]: value for key, value in self.results.items()
                if key.startswith(BASELINE_PREFIX)}

    def final_metrics(self) -> dict[str, Any]:
        """The fine-tuned model's validation metrics (`eval_*`, and unprefixed ones such as perplexity)."""
        return validation_metrics(self.results)


def _read_optional(path: str, default: Any) -> Any:
    return read_json(path) if os.path.isfile(path) else default


def read_run(folder: str) -> RunFolder:
    """Read a run folder; a UserError when it is not one."""
    if not os.path.isdir(folder):
        raise UserError(f"{folder} is not a folder; pass the --output_dir of a training run.")
    if not any(os.path.isfile(os.path.join(folder, name)) for name in _RUN_FILES):
        raise UserError(f"{folder} is not a run folder (it has no {' or '.join(_RUN_FILES)}); pass the --output_dir "
                        "of a finished training run, or of a search (--tune).")
    join = lambda name: os.path.join(folder, name)  # noqa: E731 - a local shorthand
    return RunFolder(path=folder, config=_read_optional(join(RUN_CONFIG_FILE), {}),
                     results=_read_optional(join(RESULTS_FILE), {}),
                     history=_read_optional(join(HISTORY_FILE), []),
                     log_history=_read_optional(join(LOG_HISTORY_FILE), []),
                     info=_read_optional(join(RUN_INFO_FILE), {}),
                     confusion=_read_optional(join(CONFUSION_MATRIX_FILE), None))


def best_epoch_text(run: RunFolder) -> Optional[str]:
    """One sentence on the best epoch and what picked it (None when the run has none)."""
    epoch = run.results.get("best_epoch")
    if epoch is None:
        return None
    monitor = run.info.get("monitor") or run.config.get("metric_for_best_model")
    row = next((r for r in run.history if r.get("epoch") == epoch), {})
    text = f"Best epoch: {epoch} of {run.results.get('epoch', len(run.history))}"
    if monitor and monitor in row:
        direction = {True: ", higher is better", False: ", lower is better"}.get(run.info.get("greater_is_better"), "")
        text += f", by {monitor} = {row[monitor]:.4g}{direction}"
    if run.config.get("load_best_model_at_end", True):
        text += "; its weights are the saved model's"
    return text + "."


def run_sections(run: RunFolder, curves_file: Optional[str]) -> list[Section]:
    """The sections of a run's report (`curves_file`: the curves PNG beside the report, None if there is none)."""
    config, results, info = run.config, run.results, run.info
    overview = [("task", config.get("task")), ("model", config.get("model_name_or_path")),
                ("output folder", os.path.abspath(run.path)),
                ("training examples", results.get("train_samples")),
                ("validation examples", results.get("eval_samples")),
                ("trainable parameters", results.get("trainable_parameters")),
                ("total parameters", results.get("total_parameters"))]
    sections = [Section("Run", [Table(("", "value"), [row for row in overview if row[1] is not None])])]
    settings = hyperparameters(config, results.get("best_hyperparameters"))
    sections.append(Section("Hyperparameters", [Table(("hyperparameter", "value"), list(settings.items()))]))
    curves: list[Any] = [Image(curves_file, "training curves")] if curves_file else []
    sections.append(Section("Training curves", curves or ["No per-epoch results to plot."]))
    if run.history:
        names = curve_names(run.history)
        best = results.get("best_epoch")
        rows = [[row.get("epoch"), *(row.get(name) for name in names), "best" if row.get("epoch") == best else ""]
                for row in run.history]
        blocks: list[Any] = [Table(("epoch", *names, ""), rows)]
        text = best_epoch_text(run)
        sections.append(Section("Per-epoch results", blocks + ([text] if text else [])))
    metrics, baselines = run.final_metrics(), run.baselines
    if metrics:
        header = ("result", "fine-tuned", "baseline") if baselines else ("result", "fine-tuned")
        rows = [[key, value, baselines.get(key)] if baselines else [key, value] for key, value in metrics.items()]
        blocks = [Table(header, rows)]
        if baselines:
            blocks.append("The baseline column holds the results of the features baseline (baseline_eval_* in "
                          "all_results.json), computed on the same validation data.")
        sections.append(Section("Final results", blocks))
    if run.confusion:
        labels, matrix = run.confusion["labels"], run.confusion["matrix"]
        rows = [[f"true {label}", *counts] for label, counts in zip(labels, matrix)]
        sections.append(Section("Confusion matrix", [
            "Final validation predictions: rows are the true labels, columns the predicted ones.",
            Table(("", *(f"predicted {label}" for label in labels)), rows)]))
    timing = [("started", info.get("started_at")), ("finished", info.get("finished_at")),
              ("training time (s)", results.get("train_runtime")),
              ("training throughput (examples/s)", results.get("train_samples_per_second")),
              ("final evaluation time (s)", info.get("eval_runtime"))]
    timing = [row for row in timing if row[1] is not None]
    if timing:
        sections.append(Section("Timings and throughput", [Table(("", "value"), timing)]))
    hardware = [("devices", ", ".join(info.get("devices", [])) or None), ("CPU cores", info.get("cpu_count")),
                ("strategy", info.get("strategy")), ("replicas", info.get("replicas")),
                ("mixed precision", config.get("mixed_precision")), ("XLA", config.get("jit_compile")),
                ("platform", info.get("platform")), ("Python", info.get("python"))]
    sections.append(Section("Hardware and strategy", [Table(("", "value"),
                                                            [row for row in hardware if row[1] is not None])]))
    versions = info.get("versions") or {}
    sections.append(Section("Framework versions", [Table(("library", "version"), list(versions.items()))]
                            if versions else ["Not recorded (the run predates run_info.json)."]))
    return sections


def write_report(folder: str, output_dir: Optional[str] = None) -> list[str]:
    """Write training_curves.png, report.md and report.html of the run in `folder` into `output_dir` (default: the
    run folder), each atomically; returns their paths."""
    run = read_run(folder)
    output_dir = output_dir or folder
    os.makedirs(output_dir, exist_ok=True)
    panels = curve_panels(run.history, run.log_history, run.baselines)
    curves = os.path.join(output_dir, CURVES_FILE)
    task = run.config.get("task")
    plot_panels(panels, curves, title=run.name if task in (None, run.name) else f"{task}: {run.name}")
    sections = run_sections(run, CURVES_FILE)
    title = f"Run report: {run.name}"
    md, page = os.path.join(output_dir, REPORT_MD_FILE), os.path.join(output_dir, REPORT_HTML_FILE)
    write_text(md, to_markdown(title, sections))
    write_text(page, to_html(title, sections, output_dir))
    return [curves, md, page]


@dataclass
class Entry:
    """One column of a comparison: a run or a search trial."""

    name: str
    settings: dict[str, Any]
    results: dict[str, Any]
    history: list[dict[str, Any]]


def run_entry(run: RunFolder, name: str) -> Entry:
    """A run as a comparison entry: its configuration, final results, best epoch, throughput and history."""
    results = {**run.final_metrics(), **{k: v for k, v in run.results.items() if k.startswith(BASELINE_PREFIX)}}
    for key in ("best_epoch", "epoch", "train_loss", "train_runtime", "train_samples_per_second"):
        if key in run.results:
            results[key] = run.results[key]
    return Entry(name, run.config, results, run.history)


def trial_entries(folder: str) -> list[Entry]:
    """A search's trials (tuning_results.json) as comparison entries: their values, score and objective curve."""
    search = read_json(os.path.join(folder, TUNING_RESULTS_FILE))
    objective = search["objective"]
    entries = []
    for trial in search["trials"]:
        settings = {key: value for key, value in trial.items()
                    if key not in ("trial_id", "status", "score", "best_epoch", "history", "error")}
        results = {"status": trial["status"], objective: trial.get("score"), "best_epoch": trial.get("best_epoch")}
        history = [{"epoch": i + 1, objective: value} for i, value in enumerate(trial.get("history", []))]
        entries.append(Entry(f"trial {trial['trial_id']}", settings, results, history))
    return entries


def differing_settings(entries: Sequence[Entry]) -> list[str]:
    """The settings whose values are not the same in every entry (the run's folder and logging left out)."""
    ignored = set(fields_where("changes_training", False))
    keys = dict.fromkeys(key for entry in entries for key in entry.settings if key not in ignored)
    return [key for key in keys if len({repr(entry.settings.get(key)) for entry in entries}) > 1]


def comparison_sections(entries: Sequence[Entry], curves_file: str, intro: str) -> list[Section]:
    """The sections of a comparison page: settings that differ, final results, overlaid curves."""
    header = ("", *(entry.name for entry in entries))
    settings = differing_settings(entries)
    result_keys = list(dict.fromkeys(key for entry in entries for key in entry.results))
    return [
        Section("Runs", [intro]),
        Section("Settings that differ", [Table(header, [[key, *(e.settings.get(key) for e in entries)]
                                                        for key in settings])] if settings
                else ["Every run has the same settings."]),
        Section("Final results", [Table(header, [[key, *(e.results.get(key) for e in entries)]
                                                 for key in result_keys])]),
        Section("Curves", [Image(curves_file, "curves of every run, overlaid")]),
    ]


def write_comparison(entries: Sequence[Entry], output_dir: str, intro: str) -> list[str]:
    """Write comparison_curves.png, comparison.md and comparison.html into output_dir; returns their paths."""
    os.makedirs(output_dir, exist_ok=True)
    curves = os.path.join(output_dir, COMPARISON_CURVES_FILE)
    plot_panels(overlaid_panels({entry.name: entry.history for entry in entries}), curves,
                title="Runs compared")
    sections = comparison_sections(entries, COMPARISON_CURVES_FILE, intro)
    title = f"Comparison of {len(entries)} runs"
    md, page = os.path.join(output_dir, COMPARISON_MD_FILE), os.path.join(output_dir, COMPARISON_HTML_FILE)
    write_text(md, to_markdown(title, sections))
    write_text(page, to_html(title, sections, output_dir))
    return [curves, md, page]


def entry_names(folders: Sequence[str]) -> list[str]:
    """Short, distinct names for run folders: their base names, or their paths below the common parent."""
    names = [os.path.basename(os.path.abspath(folder)) for folder in folders]
    if len(set(names)) == len(names):
        return names
    common = os.path.commonpath([os.path.abspath(folder) for folder in folders])
    return [os.path.relpath(os.path.abspath(folder), common) for folder in folders]


def build(folders: Sequence[str], output_dir: Optional[str] = None) -> list[str]:
    """What the command does: one run folder rebuilds its report; one search folder compares its trials (and rebuilds
    the retrained run's report when it holds one); several run folders are compared. Returns the files written."""
    if not folders:
        raise UserError("no folder given; pass one or more run folders (the --output_dir of training runs).")
    if len(folders) == 1:
        folder = folders[0]
        if os.path.isfile(os.path.join(folder, TUNING_RESULTS_FILE)):
            written = []
            if any(os.path.isfile(os.path.join(folder, name)) for name in _RUN_FILES):
                written += write_report(folder, output_dir)
            entries = trial_entries(folder)
            if not entries:
                raise UserError(f"the search in {folder} has no trials to compare; run the search first.")
            intro = f"Trials of the search in {os.path.abspath(folder)}, as listed in {TUNING_RESULTS_FILE}."
            return written + write_comparison(entries, output_dir or folder, intro)
        return write_report(folder, output_dir)
    runs = [read_run(folder) for folder in folders]
    entries = [run_entry(run, name) for run, name in zip(runs, entry_names(folders))]
    output_dir = output_dir or os.path.commonpath([os.path.abspath(folder) for folder in folders])
    intro = "Runs: " + "; ".join(f"{entry.name} ({os.path.abspath(run.path)})" for entry, run in zip(entries, runs))
    return write_comparison(entries, output_dir, intro + ".")
