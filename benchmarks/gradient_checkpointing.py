"""Peak memory and speed of full fine-tuning with and without gradient checkpointing, on a 12-layer Llama
configuration with random weights (built here with PyTorch transformers, saved as safetensors), in one session:
`python -m tf_finetune.train --task clm` with and without `--gradient_checkpointing`, against a PyTorch loop with and
without `model.gradient_checkpointing_enable()` (eager attention, which keeps the attention weights as TF does), on
the same blocks of token ids, batch size and AdamW settings. Each run is its own process; its peak RSS includes the
framework's own (TensorFlow's or PyTorch's) and the optimizer's state. Times exclude loading; TF's include tracing.

Usage: python benchmarks/gradient_checkpointing.py [--layers 12] [--hidden_size 256] [--block_size 512]
       [--batch_size 4] [--steps 4]
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from llm import run_measured

WORDS = ("the cat dog sat ran on under a mat house river tree saw big small red old new went came and then it was "
         "there here very one two three of to in").split()

PYTORCH_TRAINING = r'''
import json, time, torch, transformers
from pathlib import Path
folder, batch_size, checkpointing = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "true"
torch.manual_seed(0)
model = transformers.AutoModelForCausalLM.from_pretrained(folder / "model", attn_implementation="eager")
model.config.use_cache = False
if checkpointing:
    model.gradient_checkpointing_enable()
model.train()
blocks = json.loads((folder / "blocks.json").read_text())
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
start = time.perf_counter()
for first in range(0, len(blocks), batch_size):
    ids = torch.tensor(blocks[first:first + batch_size])
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    optimizer.zero_grad()
print(json.dumps({"seconds": time.perf_counter() - start, "samples": len(blocks)}))
'''


def build(folder: Path, layers: int, hidden_size: int, block_size: int, blocks: int) -> None:
    """A word-level tokenizer, a random Llama of `layers` layers, its training text and that text's blocks."""
    import torch
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocabulary = {token: index for index, token in enumerate(["<pad>", "<unk>", "</s>", *WORDS])}
    backend = Tokenizer(models.WordLevel(vocabulary, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>",
                                                     unk_token="<unk>")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=len(vocabulary), hidden_size=hidden_size,
                                      intermediate_size=3 * hidden_size, num_hidden_layers=layers,
                                      num_attention_heads=hidden_size // 64, num_key_value_heads=hidden_size // 128,
                                      max_position_embeddings=block_size, pad_token_id=0, eos_token_id=2,
                                      bos_token_id=None, tie_word_embeddings=True)
    transformers.LlamaForCausalLM(config).save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    words = [WORDS[(index * 7 + index // 13) % len(WORDS)] for index in range(block_size * blocks + 64)]
    lines = [" ".join(words[start:start + 16]) for start in range(0, len(words), 16)]
    (folder / "train.txt").write_text("".join(line + "\n" for line in lines))
    ids = [token for line in lines for token in tokenizer(line)["input_ids"]]
    (folder / "blocks.json").write_text(json.dumps([ids[start:start + block_size]
                                                    for start in range(0, block_size * blocks, block_size)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden_size", type=int, default=256)
    parser.add_argument("--block_size", type=int, default=512)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="checkpointing-benchmark-"))
    build(folder, args.layers, args.hidden_size, args.block_size, args.batch_size * args.steps)
    print(f"Llama, {args.layers} layers, hidden {args.hidden_size}, full fine-tuning, {args.steps} steps of "
          f"{args.batch_size} x {args.block_size} tokens")
    print("| | gradient checkpointing | peak RSS | samples/s |")
    print("|---|---|---|---|")
    for checkpointing in ("false", "true"):
        output_dir = folder / f"tf-{checkpointing}"
        flags = ["--task", "clm", "--model_name_or_path", str(folder / "model"), "--train_file",
                 str(folder / "train.txt"), "--do_eval", "false", "--block_size", str(args.block_size),
                 "--max_seq_length", str(args.block_size), "--per_device_train_batch_size", str(args.batch_size),
                 "--num_train_epochs", "1", "--learning_rate", "1e-4", "--output_dir", str(output_dir),
                 "--report_to", "none", "--save_strategy", "no", "--verbose", "0",
                 "--gradient_checkpointing", checkpointing]
        _, rss = run_measured("tf-finetune", "sys.argv[0] = 'tf_finetune.train'\n"
                              "runpy.run_module('tf_finetune.train', run_name='__main__')", flags)
        rate = json.loads((output_dir / "all_results.json").read_text())["train_samples_per_second"]
        print(f"| tf-finetune (TF) | {checkpointing} | {rss:.2f} GB | {rate:.2f} |", flush=True)
    for checkpointing in ("false", "true"):
        output, rss = run_measured("PyTorch", PYTORCH_TRAINING, [str(folder), str(args.batch_size), checkpointing])
        result = json.loads(output.strip().splitlines()[-1])
        print(f"| PyTorch transformers | {checkpointing} | {rss:.2f} GB | "
              f"{result['samples'] / result['seconds']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
