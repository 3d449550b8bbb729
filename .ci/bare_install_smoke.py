"""Run each task family's command in a virtual environment holding tf-finetune alone (`pip install -e .`, no extras),
so that a runtime dependency the test extra brings in by chance (jinja2 through torch) cannot hide.

    python .ci/bare_install_smoke.py BARE_VENV_PYTHON

This script runs in the test environment: it builds the tests' tiny checkpoints and each task's conformance case
(tests/task_fixtures: data files and a TrainConfig) in a temp folder, then runs `BARE_VENV_PYTHON -m
tf_finetune.train --task X ...` with the case's settings as flags (a few steps each), `predict` on the saved model,
and `export` and `report` once; then a tiny TF Llama goes to a GGUF file (`export --format gguf`) and trains on from
it (`--task chat`), where PyTorch is not installed. Exits non-zero, with the failing command's output, when any
command fails.
"""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up notices, here and in the commands

from conftest import build_tiny_bert, build_tiny_gpt2, build_tiny_mistral  # noqa: E402
from task_fixtures import CASES, TinyModels  # noqa: E402
from tf_finetune.config import TrainConfig  # noqa: E402

# One task per family: your own files, GLUE, masked and causal LM, tokens, spans, choices, conversations.
TASKS = ("text-classification", "sst2", "mlm", "clm", "ner", "qa", "multiple-choice", "chat")
# A few steps are enough to run every stage (load, tokenise, fit, evaluate, predict, save, card, report).
SHORT_RUN = {"num_train_epochs": 1, "max_train_samples": 8, "max_eval_samples": 8, "max_predict_samples": 4,
             "per_device_train_batch_size": 4, "per_device_eval_batch_size": 4, "verbose": 0}


def flags(config: TrainConfig) -> list[str]:
    """The command-line flags that give `config` (the fields that differ from their defaults)."""
    defaults = TrainConfig()
    argv = []
    for field in dataclasses.fields(TrainConfig):
        value = getattr(config, field.name)
        if value == getattr(defaults, field.name) or field.name == "task":
            continue
        if isinstance(value, bool):
            argv += [f"--{field.name}", str(value).lower()]
        elif isinstance(value, list):
            argv += [f"--{field.name}", *map(str, value)]
        else:
            argv += [f"--{field.name}", str(value)]
    return argv


def build_tiny_llama(directory: Path) -> Path:
    """A two-layer TF Llama (tf-finetune's class) with the tiny ChatML tokenizer, saved with save_pretrained."""
    from transformers import AutoTokenizer, LlamaConfig, TFAutoModelForCausalLM

    import tf_finetune  # noqa: F401 - registers the Llama class

    tokenizer = AutoTokenizer.from_pretrained(build_tiny_mistral(directory.parent / "tiny-mistral"))
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    model = TFAutoModelForCausalLM.from_config(config)
    model(model.dummy_inputs)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def run(python: str, label: str, *argv: str) -> None:
    """Run `python ARGV...` from outside the checkout (so only the installed package is importable); exit with its
    output when it fails."""
    start = time.perf_counter()
    result = subprocess.run([python, *argv], cwd=tempfile.gettempdir(), capture_output=True, text=True,
                            stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": ""}, timeout=900)
    if result.returncode != 0:
        sys.exit(f"bare install: {label} failed with exit code {result.returncode}: {' '.join(argv)}\n"
                 f"{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    print(f"bare install: {label} ok ({time.perf_counter() - start:.0f}s)", flush=True)


def main(python: str) -> None:
    with tempfile.TemporaryDirectory(prefix="tf-finetune-bare-") as tmp:
        root = Path(tmp)
        models = TinyModels(bert=build_tiny_bert(root / "tiny-bert"), gpt2=build_tiny_gpt2(root / "tiny-gpt2"))
        for task in TASKS:
            (root / task).mkdir()
            case = CASES[task](models, root / task)
            out = root / task / "out"
            config = case.config.replace(output_dir=str(out), **SHORT_RUN)
            run(python, f"train --task {task}", "-m", "tf_finetune.train", "--task", task, *flags(config))
            run(python, f"predict ({task})", "-m", "tf_finetune.predict", "--model", str(out), *case.predict_args)
        classifier = root / "text-classification" / "out"
        run(python, "export --format pytorch", "-m", "tf_finetune.export", str(classifier), "--format", "pytorch",
            "--output_dir", str(root / "exported"))
        run(python, "report", "-m", "tf_finetune.report", str(classifier), "--output_dir", str(root / "report"))
        llama = build_tiny_llama(root / "tiny-llama")
        run(python, "export --format gguf", "-m", "tf_finetune.export", str(llama), "--format", "gguf",
            "--outtype", "q8_0", "--output_dir", str(root / "gguf"))
        chat = CASES["chat"](models, root / "chat").config.replace(
            model_name_or_path=str(root / "gguf" / "tiny-llama-Q8_0.gguf"), output_dir=str(root / "gguf-chat"),
            **SHORT_RUN)
        run(python, "train --task chat from a GGUF file", "-m", "tf_finetune.train", "--task", "chat", *flags(chat))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
