"""Curves and run reports: what training writes, the report command, comparisons, and report.html in Chromium."""
from __future__ import annotations

import base64
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_sentiment_files
from tf_finetune.outputs import report as report_module
from tf_finetune.config import TrainConfig
from tf_finetune.outputs.plots import curve_panels, overlaid_panels
from tf_finetune.outputs.report import build, read_run, write_report
from tf_finetune.training import train

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def runs(tiny_bert, tmp_path_factory) -> dict:
    """Two finished runs that differ in learning rate; the second one's report fails to plot."""
    root = tmp_path_factory.mktemp("runs")
    paths = write_sentiment_files(root, {"train": 96, "valid": 32})
    config = TrainConfig(task="text-classification", model_name_or_path=str(tiny_bert), train_file=paths["train"],
                         validation_file=paths["valid"], output_dir=str(root / "lr-high"), num_train_epochs=3,
                         per_device_train_batch_size=8, learning_rate=3e-3, verbose=0)
    results = train(config)
    records = []

    class Capture(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    def broken_plot(*args, **kwargs):
        raise RuntimeError("no display for plotting")

    handler = Capture(level=logging.WARNING)
    logging.getLogger("tf_finetune").addHandler(handler)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(report_module, "plot_panels", broken_plot)
            low_results = train(config.replace(output_dir=str(root / "lr-low"), learning_rate=1e-4))
    finally:
        logging.getLogger("tf_finetune").removeHandler(handler)
    return {"root": root, "high": root / "lr-high", "low": root / "lr-low", "results": results,
            "low_results": low_results, "warnings": records}


def test_run_writes_curves_and_report(runs):
    out, results = runs["high"], runs["results"]
    for name in ("training_curves.png", "report.md", "report.html", "run_info.json", "eval_confusion_matrix.json"):
        assert (out / name).is_file(), name
    assert (out / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    history = json.loads((out / "history.json").read_text())
    panels = curve_panels(history)
    assert [panel.title for panel in panels] == ["loss", "eval_accuracy", "eval_f1"]
    loss = {series.label: series for series in panels[0].series}
    assert set(loss) == {"training loss", "validation loss"}
    assert loss["validation loss"].x == [1.0, 2.0, 3.0]
    assert loss["validation loss"].y == pytest.approx([row["eval_loss"] for row in history])
    assert panels[1].series[0].y == pytest.approx([row["eval_accuracy"] for row in history])

    text = (out / "report.md").read_text()
    best = results["best_epoch"]
    for row in history:
        cells = f"| {row['epoch']} | {row['loss']:.4g} | {row['eval_loss']:.4g} | {row['eval_accuracy']:.4g} |"
        assert cells in text
    assert re.findall(r"^\| (\d+) \|.*\| best \|$", text, re.M) == [str(best)]
    assert f"Best epoch: {best} of 3, by eval_accuracy" in text
    assert "![training curves](training_curves.png)" in text
    assert "default strategy, 1 replica" in text and "| tensorflow | 2.21" in text

    matrix = json.loads((out / "eval_confusion_matrix.json").read_text())
    assert matrix["labels"] == ["negative", "positive"]
    counts = matrix["matrix"]
    assert sum(map(sum, counts)) == results["eval_samples"] == 32
    assert (counts[0][0] + counts[1][1]) / 32 == pytest.approx(results["eval_accuracy"])
    assert f"| true negative | {counts[0][0]} | {counts[0][1]} |" in text

    page = (out / "report.html").read_text()
    embedded = re.search(r'<img src="data:image/png;base64,([^"]+)"', page).group(1)
    assert base64.b64decode(embedded) == (out / "training_curves.png").read_bytes()
    assert "<th>predicted positive</th>" in page and not re.search(r'(src|href)="(http|/|\.)', page)


def test_plotting_failure_keeps_the_results(runs):
    out = runs["low"]
    assert json.loads((out / "all_results.json").read_text()) == runs["low_results"]
    assert not (out / "report.html").exists() and not (out / "training_curves.png").exists()
    assert any("Could not write the run report (RuntimeError: no display for plotting)" in message and
               "python -m tf_finetune.report" in message for message in runs["warnings"]), runs["warnings"]


def test_command_rebuilds_a_report_and_rejects_other_folders(runs, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(runs["low"], folder)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "tf_finetune.report", str(folder)], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(folder / name) for name in ("training_curves.png", "report.md", "report.html")]
    assert "Best epoch:" in (folder / "report.md").read_text()

    done = subprocess.run([sys.executable, "-m", "tf_finetune.report", str(tmp_path)], capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: {tmp_path} is not a run folder (it has no run_config.json "
                                                "or all_results.json); pass the --output_dir of a finished training "
                                                "run, or of a search (--tune)."]


def test_older_run_and_per_step_log(tmp_path):
    """A run folder with only history and results still gets a report; log_history.json adds per-step training
    loss and the learning rate; baseline results are shown beside the fine-tuned ones."""
    history = [{"epoch": 1, "loss": 0.7, "eval_loss": 0.6, "eval_accuracy": 0.6},
               {"epoch": 2, "loss": 0.5, "eval_loss": 0.4, "eval_accuracy": 0.8}]
    (tmp_path / "history.json").write_text(json.dumps(history))
    (tmp_path / "all_results.json").write_text(json.dumps({"epoch": 2, "eval_loss": 0.4, "eval_accuracy": 0.8,
                                                           "baseline_eval_accuracy": 0.55}))
    write_report(str(tmp_path))
    text = (tmp_path / "report.md").read_text()
    assert "| eval_accuracy | 0.8 | 0.55 |" in text and "Not recorded" in text
    panels = curve_panels(history, baselines=read_run(str(tmp_path)).baselines)
    assert [(s.label, s.y) for s in panels[1].series] == [("fine-tuned", [0.6, 0.8]), ("baseline", [0.55, 0.55])]

    log = [{"step": step, "epoch": step / 4, "loss": 1.0 - step / 10, "learning_rate": 1e-3 * (1 - step / 8)}
           for step in range(1, 9)]
    (tmp_path / "log_history.json").write_text(json.dumps(log))
    run = read_run(str(tmp_path))
    panels = curve_panels(run.history, run.log_history, run.baselines)
    per_step = panels[0].series[0]
    assert per_step.label == "training loss (per logging step)" and per_step.x == [s / 4 for s in range(1, 9)]
    assert panels[-1].title == "learning rate" and panels[-1].series[0].x == list(map(float, range(1, 9)))
    write_report(str(tmp_path))  # plots the per-step series as well
    assert (tmp_path / "training_curves.png").stat().st_size > 1000


def test_card_report_and_trackers_agree_on_metrics_and_hyperparameters(tmp_path):
    """One rule each: the model card's model-index, the report's final results and the trackers' HParams list the
    same metrics (perplexity too) and the same hyperparameters (the search's tuned values included)."""
    from huggingface_hub import ModelCard

    from tf_finetune.outputs.model_card import write_model_card_for_run
    from tf_finetune.training.trackers import tensorboard_hparams

    config = TrainConfig(task="clm", model_name_or_path="gpt2", lora_rank=4, learning_rate=1e-4)
    tuned = {"learning_rate": 3e-4}
    (tmp_path / "run_config.json").write_text(json.dumps(config.to_dict()))
    (tmp_path / "all_results.json").write_text(json.dumps({
        "epoch": 2, "best_epoch": 2, "train_loss": 3.1, "train_runtime": 9.5, "train_samples": 64,
        "trainable_parameters": 1000, "eval_loss": 2.5, "perplexity": 12.18, "eval_samples": 16,
        "eval_runtime": 0.5, "baseline_eval_accuracy": 0.5, "best_hyperparameters": tuned}))
    card = ModelCard.load(write_model_card_for_run(str(tmp_path), "alice/clm-run"))
    assert {(r.metric_type, r.metric_value) for r in card.data.eval_results} == {("loss", 2.5), ("perplexity", 12.18)}
    assert read_run(str(tmp_path)).final_metrics() == {"eval_loss": 2.5, "perplexity": 12.18}

    table = card.text.split("## Training hyperparameters")[1].split("##")[0]
    in_card = dict(re.findall(r"^\| (\w+) \| (.*) \|$", table, flags=re.MULTILINE))
    in_card.pop("Hyperparameter")
    write_report(str(tmp_path))
    report = (tmp_path / "report.md").read_text().split("## Hyperparameters")[1].split("##")[0]
    in_report = dict(re.findall(r"^\| (\w+) \| (.*) \|$", report, flags=re.MULTILINE))
    in_report.pop("hyperparameter")
    assert in_card.keys() == in_report.keys()
    assert in_card["learning_rate"] == "0.0003" and {"lora_rank", "block_size"} <= in_card.keys()
    assert "max_seq_length" not in in_card and "mlm_probability" not in in_card  # not for clm
    hparams = tensorboard_hparams(config.replace(**tuned))
    assert hparams.keys() == in_card.keys() and hparams["learning_rate"] == 3e-4


def test_comparison_of_two_runs(runs, tmp_path):
    written = build([str(runs["high"]), str(runs["low"])], str(tmp_path))
    assert [Path(p).name for p in written] == ["comparison_curves.png", "comparison.md", "comparison.html"]
    text = (tmp_path / "comparison.md").read_text()
    assert "| learning_rate | 0.003 | 0.0001 |" in text
    assert "output_dir" not in text  # differs, but is not a setting of training
    accuracy = (runs["results"]["eval_accuracy"], runs["low_results"]["eval_accuracy"])
    assert f"| eval_accuracy | {accuracy[0]:.4g} | {accuracy[1]:.4g} |" in text
    histories = {name: read_run(str(runs[key])).history for name, key in (("lr-high", "high"), ("lr-low", "low"))}
    panels = overlaid_panels(histories)
    assert [p.title for p in panels] == ["loss", "eval_loss", "eval_accuracy", "eval_f1"]
    assert [s.label for s in panels[2].series] == ["lr-high", "lr-low"]
    assert panels[2].series[1].y == pytest.approx([row["eval_accuracy"] for row in histories["lr-low"]])


def test_comparison_of_a_search(tmp_path):
    from tf_finetune.core.layout import TUNING_RESULTS_FILE as RESULTS_JSON

    trials = [{"trial_id": "0", "status": "COMPLETED", "score": 0.9, "best_epoch": 2, "learning_rate": 1e-4,
               "per_device_train_batch_size": 16, "history": [0.8, 0.9]},
              {"trial_id": "1", "status": "COMPLETED", "score": 0.7, "best_epoch": 1, "learning_rate": 1e-3,
               "per_device_train_batch_size": 16, "history": [0.7, 0.6]}]
    (tmp_path / RESULTS_JSON).write_text(json.dumps({"objective": "eval_accuracy", "trials": trials}))
    written = build([str(tmp_path)])
    assert [Path(p).name for p in written] == ["comparison_curves.png", "comparison.md", "comparison.html"]
    text = (tmp_path / "comparison.md").read_text()
    assert "| learning_rate | 0.0001 | 0.001 |" in text and "per_device_train_batch_size" not in text
    assert "| eval_accuracy | 0.9 | 0.7 |" in text


def test_report_renders_in_chromium(runs, tmp_path):
    """report.html in a real headless browser: title and headings render, the curves image is loaded and visible,
    and nothing is logged as an error."""
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed "
                                                                      "(pip install playwright)")
    if not os.path.isfile(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    errors = []
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto((runs["high"] / "report.html").as_uri())
            page.wait_for_load_state("load")
            assert page.title() == "Run report: lr-high"
            headings = page.locator("h2").all_inner_texts()
            assert {"Training curves", "Per-epoch results", "Confusion matrix", "Framework versions"} <= set(headings)
            images = page.locator("img")
            assert images.count() == 1
            for i in range(images.count()):
                image = images.nth(i)
                image.scroll_into_view_if_needed()
                assert image.is_visible()
                assert image.evaluate("img => img.complete && img.naturalWidth") > 0
                box = image.bounding_box()
                assert box["width"] > 300 and box["height"] > 100
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        finally:
            browser.close()
    assert errors == []
    assert (tmp_path / "report.png").stat().st_size > 10_000
