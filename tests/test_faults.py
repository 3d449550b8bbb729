"""Kills at random moments, during training and inside checkpoint writes: each time the same command resumes, and the
end is the uninterrupted run's, weights and results.

A tiny BERT trains for 320 optimizer steps (4 epochs of 80) with --save_steps 10 in a subprocess. It is killed with
SIGKILL at seeded random moments, some timed to land while a checkpoint is being written (a `.tmp-checkpoint-*`
folder exists), and, side by side in another folder, with SIGTERM (which finishes the step, saves and exits 143).
Prints the kills, how many landed in a save, and the largest weight difference to the uninterrupted run.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import write_sentiment_files

REPO = Path(__file__).resolve().parents[1]
KILLS = int(os.environ.get("TF_FINETUNE_FAULT_KILLS", "3"))  # 10 or more for a thorough run
TIMING_KEYS = ("train_runtime", "train_samples_per_second")


@pytest.fixture(scope="module")
def model(tiny_bert, tmp_path_factory) -> Path:
    """The tiny BERT, with dropout unless TF_FINETUNE_FAULT_NO_DROPOUT is set."""
    if not os.environ.get("TF_FINETUNE_FAULT_NO_DROPOUT"):
        return tiny_bert
    import shutil

    directory = tmp_path_factory.mktemp("no-dropout") / "model"
    shutil.copytree(tiny_bert, directory)
    config = json.loads((directory / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (directory / "config.json").write_text(json.dumps(config))
    return directory


@pytest.fixture(scope="module")
def data_files(tmp_path_factory) -> dict[str, str]:
    return write_sentiment_files(tmp_path_factory.mktemp("fault-data"), {"train": 320, "valid": 32})


def command(model: Path, data_files: dict[str, str], output_dir: Path) -> list[str]:
    return [sys.executable, "-m", "tf_finetune.train", "--task", "text-classification", "--model_name_or_path",
            str(model), "--train_file", data_files["train"], "--validation_file", data_files["valid"],
            "--output_dir", str(output_dir), "--num_train_epochs", "4", "--per_device_train_batch_size", "4",
            "--learning_rate", "3e-3", "--save_strategy", "steps", "--save_steps", "10", "--verbose", "0"]


def weights(output_dir: Path) -> dict[str, np.ndarray]:
    found = {}
    with h5py.File(output_dir / "tf_model.h5") as file:
        file.visititems(lambda name, item: found.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset)
                        else None)
    return found


def results(output_dir: Path) -> dict:
    values = json.loads((output_dir / "all_results.json").read_text())
    return {key: value for key, value in values.items() if key not in TIMING_KEYS}


def in_save(checkpoint_dir: Path) -> bool:
    return checkpoint_dir.is_dir() and any(name.startswith(".tmp-checkpoint-") for name in os.listdir(checkpoint_dir))


def saves(checkpoint_dir: Path) -> set[str]:
    return {name for name in os.listdir(checkpoint_dir) if name.startswith("checkpoint-")} \
        if checkpoint_dir.is_dir() else set()


def kill_at(process: subprocess.Popen, checkpoint_dir: Path, how: signal.Signals, inside_save: bool,
            rng: random.Random) -> bool:
    """Let the run write 1-2 new checkpoints (1 before a SIGTERM, whose own checkpoint is progress too; inside_save:
    get into the write of the next), then send `how`; returns whether the signal landed while a checkpoint was being
    written (False if the run finished first)."""
    before, wanted = saves(checkpoint_dir), rng.randint(1, 2 if how == signal.SIGKILL else 1)
    while process.poll() is None and len(saves(checkpoint_dir) - before) < wanted:
        time.sleep(0.002)
    if inside_save:
        while process.poll() is None and not in_save(checkpoint_dir):
            time.sleep(0.0005)
    else:
        time.sleep(rng.uniform(0, 0.1))
    if process.poll() is not None:
        return False
    landed = in_save(checkpoint_dir)
    process.send_signal(how)
    return landed


def kill_and_resume(how: signal.Signals, model: Path, data_files: dict[str, str], output_dir: Path,
                    seed: int) -> tuple[int, int]:
    """Start, signal and restart the run until it has been signalled KILLS times, then let it finish; returns
    (signals sent, signals that landed inside a checkpoint write)."""
    rng, kills, landed, finished = random.Random(seed), 0, 0, False
    while kills < KILLS and not finished:
        process = subprocess.Popen(command(model, data_files, output_dir), stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        hit = kill_at(process, output_dir / "checkpoint", how, inside_save=how == signal.SIGKILL and kills % 2 == 0,
                      rng=rng)
        output, _ = process.communicate(timeout=600)
        finished = process.returncode == 0  # it ended before the signal
        if finished:
            continue
        kills, landed = kills + 1, landed + hit
        assert process.returncode == (-signal.SIGKILL if how == signal.SIGKILL else 143), output[-3000:]
        if how == signal.SIGTERM:
            assert "stopped by SIGTERM after writing" in output and "run the same command again" in output
    if not finished:
        finish = subprocess.run(command(model, data_files, output_dir), capture_output=True, text=True, timeout=600)
        assert finish.returncode == 0, finish.stderr[-3000:]
    return kills, landed


@pytest.mark.slow
def test_killed_runs_resume_to_the_uninterrupted_result(model, data_files, tmp_path):
    whole = tmp_path / "whole"
    subprocess.run(command(model, data_files, whole), check=True, capture_output=True, timeout=600)
    reference = weights(whole)
    with ThreadPoolExecutor(max_workers=2) as pool:  # the two sequences side by side: most of a start is imports
        futures = {how: pool.submit(kill_and_resume, how, model, data_files, tmp_path / how.name, seed)
                   for seed, how in enumerate((signal.SIGKILL, signal.SIGTERM))}
        outcomes = {how: future.result() for how, future in futures.items()}
    for how, (kills, landed) in outcomes.items():
        final = weights(tmp_path / how.name)
        difference = max(float(np.max(np.abs(final[name] - reference[name]))) for name in reference)
        print(f"\n{how.name}: {kills} kills, {landed} inside a checkpoint write, largest weight difference "
              f"{difference}")
        assert kills >= KILLS - 1, f"{how.name}: the run finished before it could be killed often enough"
        assert final.keys() == reference.keys() and difference == 0.0
        assert results(tmp_path / how.name) == results(whole)
    again = subprocess.run(command(model, data_files, tmp_path / "SIGKILL"), capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 2 and "already holds a finished run" in again.stderr
