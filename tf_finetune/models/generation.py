"""Answering conversations with a causal LM's `generate`: eagerly with the KV cache, or through XLA, which compiles
once per input shape, so prompts are padded to a few lengths and batches to one size."""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import tensorflow as tf

from tf_finetune.core.progress import with_progress
from tf_finetune.models.functions import XLA_PAD_MULTIPLE, xla_generate

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase, TFPreTrainedModel


def generate_answers(model: "TFPreTrainedModel", tokenizer: "PreTrainedTokenizerBase",
                     conversations: Sequence[Sequence[dict]], max_new_tokens: int, batch_size: int,
                     temperature: float = 0.0, top_p: float = 1.0, jit_compile: bool = False) -> list[str]:
    """The model's next assistant turn for each conversation, generated in batches of similar length (left-padded)
    until the end-of-sequence token or max_new_tokens; greedy unless temperature > 0. With `jit_compile`, through
    XLA: prompts padded to a multiple of XLA_PAD_MULTIPLE tokens and every batch to the first's size, so each
    length compiles once."""
    prompts = [tokenizer.apply_chat_template(list(turns), tokenize=False, add_generation_prompt=True)
               for turns in conversations]
    encoded = [tokenizer(prompt, add_special_tokens=False)["input_ids"] for prompt in prompts]
    order = np.argsort([-len(ids) for ids in encoded], kind="stable")
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else \
        {"do_sample": False}
    generate = xla_generate(model) if jit_compile else model.generate
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    answers: list[str] = [""] * len(prompts)
    for start in with_progress(range(0, len(order), batch_size), "Generating"):
        rows = order[start:start + batch_size]
        width = max(len(encoded[i]) for i in rows)
        lines = len(rows)
        if jit_compile:
            width = -(-width // XLA_PAD_MULTIPLE) * XLA_PAD_MULTIPLE
            lines = min(batch_size, len(order))
        input_ids = np.full((lines, width), pad, dtype=np.int32)
        attention_mask = np.zeros((lines, width), dtype=np.int32)
        for line in range(lines):  # left padding: every prompt ends where generation starts
            ids = encoded[rows[min(line, len(rows) - 1)]]  # a short last batch repeats its last prompt
            input_ids[line, width - len(ids):] = ids
            attention_mask[line, width - len(ids):] = 1
        output = generate(input_ids=tf.constant(input_ids), attention_mask=tf.constant(attention_mask),
                          max_new_tokens=max_new_tokens, pad_token_id=pad, eos_token_id=tokenizer.eos_token_id,
                          **sampling)
        texts = tokenizer.batch_decode(np.asarray(output)[:len(rows), width:], skip_special_tokens=True)
        for row, text in zip(rows, texts):
            answers[row] = text.strip()
    return answers

