"""What commands print: quiet start-up, --log_level, progress lines off a terminal, progress bars, the summary."""
from __future__ import annotations

import logging
import os
import re
import subprocess
import sys

import numpy as np
import tensorflow as tf
import tf_keras

from conftest import write_sentiment_files
from tf_finetune.core import progress
from tf_finetune.training.callbacks import ProgressLines, keras_verbosity, progress_callbacks
from tf_finetune.cli import parse_config
from tf_finetune.core.logs import command_logging, log_level_from_argv, native_noise_filtered

NOISE = ("absl::InitializeLog", "cuInit", "cuda drivers", "oneDNN custom operations", "deprecated and will be removed",
         "Some weights", "were not used", "newly initialized", "You should probably TRAIN")


def train_command(tiny_bert, tmp_path, *extra: str) -> subprocess.CompletedProcess:
    """The README's main command on a tiny model and small files, its output going to a pipe (not a terminal)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    files = write_sentiment_files(tmp_path, {"train": 96, "valid": 32})
    command = [sys.executable, "-m", "tf_finetune.train", "--task", "text-classification", "--model_name_or_path",
               str(tiny_bert), "--train_file", files["train"], "--validation_file", files["valid"],
               "--num_train_epochs", "2", "--per_device_train_batch_size", "4", "--learning_rate", "1e-3",
               "--output_dir", str(tmp_path / "out"), *extra]
    environment = {name: value for name, value in os.environ.items() if name != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment)


def test_a_run_off_a_terminal_prints_a_few_whole_lines_and_ends_with_its_summary(tiny_bert, tmp_path):
    result = train_command(tiny_bert, tmp_path)
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    lines = output.splitlines()
    assert "\r" not in output and "\b" not in output  # no progress bar redrawn in place
    assert len(lines) < 40, output
    assert not [line for line in lines if any(noise in line for noise in NOISE)], output
    assert "New in the model (randomly initialised, trained from scratch): classifier." in lines
    steps = [line for line in lines if re.match(r"epoch [12]/2  step \d+/24 \(\d+%\)  loss \d\.\d{4}", line)]
    assert 2 * 8 <= len(steps) <= 2 * 10, output  # a line per 10% of each epoch (some steps pass two marks)
    assert len([line for line in lines if re.match(r"epoch [12]/2 done in .*: loss .*eval_accuracy", line)]) == 2
    assert re.fullmatch(rf"Done in \d+s: eval_accuracy = \d\.\d{{4}} \(best epoch [12]\)\. Model, results and report "
                        rf"in {re.escape(str(tmp_path / 'out'))}", lines[-1]), lines[-1]


def test_importing_a_command_leaves_tqdm_to_be_set_up_by_its_logging():
    # tqdm reads its TQDM_* defaults once, when imported: a command module that imports it (huggingface_hub does)
    # before command_logging runs gets a progress bar for every dataset step of a log file.
    commands = ("train", "predict", "export", "push", "report")
    code = "import sys\n" + "".join(f"import tf_finetune.{name}\n" for name in commands) + \
        "print(sorted(name for name in sys.modules if name.split('.')[0] == 'tqdm'))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result.stdout


def test_log_level_debug_shows_the_libraries_notices_and_warning_only_problems(tiny_bert, tmp_path):
    debug = train_command(tiny_bert, tmp_path / "debug", "--log_level", "debug", "--num_train_epochs", "1")
    assert debug.returncode == 0, debug.stderr
    assert "deprecated and will be removed in Transformers v5" in debug.stderr
    assert "newly initialized" in debug.stderr
    quiet = train_command(tiny_bert, tmp_path / "quiet", "--log_level", "warning", "--num_train_epochs", "1")
    assert quiet.returncode == 0, quiet.stderr
    assert not (quiet.stdout + quiet.stderr).strip(), quiet.stdout + quiet.stderr


def test_native_noise_is_dropped_and_other_native_output_kept(capfd):
    with native_noise_filtered():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
        os.write(2, b"E0000 00:00:1.2 7 cuda_platform.cc:52] failed call to cuInit: UNKNOWN ERROR (303)\n")
        os.write(2, b"a real problem\n")
    assert capfd.readouterr().err == "a real problem\n"
    with native_noise_filtered("debug"):
        os.write(2, b"E0000 cuda_platform.cc:52] failed call to cuInit\n")
    assert "cuInit" in capfd.readouterr().err


def test_log_level_from_a_config_file_applies_too(tmp_path):
    config_file = tmp_path / "run.json"
    config_file.write_text('{"log_level": "warning"}')
    package = logging.getLogger("tf_finetune")
    with command_logging("info"):  # puts every logger back afterwards, as a command does
        assert parse_config(["--config", str(config_file)], prog="t", description="").log_level == "warning"
        assert package.level == logging.WARNING


def test_log_level_is_read_from_the_flags():
    assert log_level_from_argv(["--task", "sst2", "--log_level", "debug"]) == "debug"
    assert log_level_from_argv(["--log_level=warning"]) == "warning"
    assert log_level_from_argv(["--log_level", "loud"]) == "info"  # argparse reports it; logging stays as usual
    assert log_level_from_argv([]) == "info"


def test_progress_lines_stand_in_for_the_bar_only_off_a_terminal(monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    assert [type(c) for c in progress_callbacks(1)] == [ProgressLines] and keras_verbosity(1) == 0
    assert progress_callbacks(2) == [] and keras_verbosity(2) == 2
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert progress_callbacks(1) == [] and keras_verbosity(1) == 1


def test_progress_lines_count_a_resumed_epoch_from_where_it_was(caplog):
    model = tf_keras.Sequential([tf_keras.layers.Dense(1, input_shape=(2,))])
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.ones((30, 2), np.float32), np.zeros((30, 1), np.float32)
    with caplog.at_level(logging.INFO, logger="tf_finetune"):
        model.fit(x, y, batch_size=2, epochs=1, verbose=0, callbacks=[ProgressLines(batch_offset=5)])
    lines = [record.getMessage() for record in caplog.records]
    steps = [int(re.search(r"step (\d+)/20", line).group(1)) for line in lines if "step" in line]
    assert steps == [6, 8, 10, 12, 14, 16, 18], lines  # 20 batches, the first 5 done before the resume
    assert lines[-1].startswith("epoch 1/1 done in") and "loss" in lines[-1]


def test_evaluation_progress_bars_show_only_for_long_work(monkeypatch, capsys):
    dataset = tf.data.Dataset.range(5).batch(1)
    assert [int(batch[0]) for batch in progress.with_progress(dataset, "Evaluating")] == [0, 1, 2, 3, 4]
    assert "Evaluating" not in capsys.readouterr().err  # done before the bar's delay
    monkeypatch.setattr(progress, "SHOW_AFTER_SECONDS", 0)
    list(progress.with_progress(dataset, "Evaluating"))
    assert re.search(r"Evaluating: .*/5 ", capsys.readouterr().err)  # the bar, with its total of batches
    assert list(progress.with_progress(range(0, 10, 2), "Generating")) == [0, 2, 4, 6, 8]  # batch starts
    assert re.search(r"Generating: .*/5 ", capsys.readouterr().err)
    model = tf_keras.Sequential([tf_keras.layers.Dense(1, input_shape=(2,))])
    model.predict(np.ones((6, 2)), batch_size=2, verbose=0, callbacks=[progress.PredictionProgress("Predicting")])
    assert re.search(r"Predicting: .*/3 ", capsys.readouterr().err)
