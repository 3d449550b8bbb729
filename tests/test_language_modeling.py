"""The mlm and clm tasks: reading text, block grouping, fixed evaluation masking, perplexity, end-to-end training."""
from __future__ import annotations

import io
import json
import logging
import math
import random

import numpy as np
import pytest

from conftest import WORDS
from tf_finetune.config import TrainConfig
from tf_finetune.core.errors import UserError
from tf_finetune.tasks import get_task
from tf_finetune.tasks.language_modeling import _token_loss_step, group_texts, head_applies_to_positions, mask_once


def write_lines(path, count: int, seed: int = 0, blank_every: int = 5):
    """`count` lines of 3-20 random words, with a blank line after every `blank_every`-th."""
    rng = random.Random(seed)
    lines = []
    for i in range(count):
        lines.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 20))))
        if i % blank_every == 0:
            lines.append("   ")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture()
def text_files(tmp_path):
    return write_lines(tmp_path / "train.txt", 120), write_lines(tmp_path / "valid.txt", 30, seed=1)


def lm_config(task, model, files, tmp_path, **changes) -> TrainConfig:
    values = dict(task=task, model_name_or_path=str(model), train_file=str(files[0]), validation_file=str(files[1]),
                  output_dir=str(tmp_path / "out"), block_size=32, per_device_train_batch_size=4,
                  per_device_eval_batch_size=4, num_train_epochs=1, learning_rate=1e-3, verbose=0)
    values.update(changes)
    return TrainConfig(**values)


def tokenized(config: TrainConfig):
    from tf_finetune.models.loading import load_tokenizer

    task = get_task(config.task)
    tokenizer = load_tokenizer(config.model_name_or_path)
    splits = task.tokenize(task.load_raw_datasets(config), tokenizer, config)
    return {name: split.features for name, split in splits.items()}, tokenizer


def test_group_texts_concatenates_and_drops_the_remainder():
    batch = {"input_ids": [[1, 2, 3], [4, 5, 6, 7], [8]], "attention_mask": [[1, 1, 1], [1, 1, 1, 1], [1]]}
    assert group_texts(batch, block_size=3) == {"input_ids": [[1, 2, 3], [4, 5, 6]],
                                                "attention_mask": [[1, 1, 1], [1, 1, 1]]}


def test_texts_are_grouped_into_full_blocks(tiny_bert, text_files, tmp_path):
    config = lm_config("mlm", tiny_bert, text_files, tmp_path)
    splits, tokenizer = tokenized(config)
    train = splits["train"]
    assert {len(ids) for ids in train["input_ids"]} == {32}
    assert set(train.column_names) == {"input_ids", "token_type_ids", "attention_mask"}
    lines = [line for line in text_files[0].read_text().splitlines() if line.strip()]
    all_tokens = sum(len(tokenizer(line)["input_ids"]) for line in lines)
    assert len(train) == all_tokens // 32  # one map batch holds all 120 texts: only the last partial block is lost


def test_line_by_line_keeps_one_truncated_example_per_nonblank_line(tiny_bert, text_files, tmp_path):
    config = lm_config("mlm", tiny_bert, text_files, tmp_path, line_by_line=True, block_size=12)
    splits, tokenizer = tokenized(config)
    lengths = [len(ids) for ids in splits["train"]["input_ids"]]
    assert len(lengths) == 120  # the blank lines are dropped
    assert max(lengths) == 12 and min(lengths) < 12
    assert all(ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
               for ids in splits["train"]["input_ids"])


def test_max_samples_count_blocks(tiny_bert, text_files, tmp_path):
    config = lm_config("mlm", tiny_bert, text_files, tmp_path, max_train_samples=5, max_eval_samples=3)
    splits, _ = tokenized(config)
    assert (len(splits["train"]), len(splits["validation"])) == (5, 3)


def test_block_size_is_lowered_to_the_model_limit(tiny_bert, text_files, tmp_path, caplog):
    config = lm_config("mlm", tiny_bert, (write_lines(tmp_path / "long.txt", 400), text_files[1]), tmp_path,
                       block_size=1000)
    splits, _ = tokenized(config)
    assert {len(ids) for ids in splits["train"]["input_ids"]} == {128}
    assert "--block_size 1000 is more than" in caplog.text


def test_nested_fields_are_flattened_and_lists_joined(tiny_bert, tmp_path):
    rows = [{"id": i, "answers": {"text": [f"the cat sat {i}", None, "on the mat"], "score": [1, 2, 3]}}
            for i in range(3)] + [{"id": 9, "answers": {"text": [], "score": []}}]
    path = tmp_path / "eli5.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    config = lm_config("mlm", tiny_bert, (path, path), tmp_path, text_column=["answers.text"])
    raw = get_task("mlm").load_raw_datasets(config)
    assert raw["train"].column_names == ["text"]
    assert raw["train"]["text"] == ["the cat sat 0 on the mat", "the cat sat 1 on the mat", "the cat sat 2 on the mat"]


def test_validation_is_held_out_from_train_with_the_seed(tiny_bert, text_files, tmp_path):
    task = get_task("clm")
    config = lm_config("clm", tiny_bert, text_files, tmp_path, validation_file=None)
    first, again = task.load_raw_datasets(config), task.load_raw_datasets(config)
    other = task.load_raw_datasets(config.replace(seed=7))
    assert (len(first["train"]), len(first["validation"])) == (114, 6)  # 5% of the 120 texts
    assert first["validation"]["text"] == again["validation"]["text"] != other["validation"]["text"]
    assert not set(first["validation"]["text"]) & set(first["train"]["text"])


def test_validation_masking_is_fixed_by_the_seed(tiny_bert, text_files, tmp_path):
    config = lm_config("mlm", tiny_bert, text_files, tmp_path, block_size=64)
    splits, tokenizer = tokenized(config)
    again, _ = tokenized(config.replace(overwrite_cache=True))
    validation = splits["validation"]
    assert validation["labels"] == again["validation"]["labels"]
    assert validation["input_ids"] == again["validation"]["input_ids"]
    labels = np.array(validation["labels"])
    masked = labels != -100
    assert 0.10 < masked.mean() < 0.20
    inputs = np.array(validation["input_ids"])
    assert (inputs[masked] == tokenizer.mask_token_id).mean() > 0.6  # 80% [MASK], 10% random, 10% kept
    assert not np.isin(labels[masked], tokenizer.all_special_ids).any()
    other_seed = mask_once(splits["train"], tokenizer, 0.15, seed=43)
    assert other_seed["labels"][:5] != mask_once(splits["train"], tokenizer, 0.15, seed=42)["labels"][:5]


def test_mlm_evaluation_is_repeatable_and_averages_over_masked_tokens(tiny_bert, text_files, tmp_path):
    import tensorflow as tf

    from tf_finetune.training import FineTuneRun

    run = FineTuneRun(lm_config("mlm", tiny_bert, text_files, tmp_path, per_device_eval_batch_size=3))
    first, second = run.evaluate(), run.evaluate()
    assert first == second
    assert first["perplexity"] == pytest.approx(math.exp(first["eval_loss"]))
    validation = run.splits["validation"].features
    features = {name: tf.constant(validation[name]) for name in ("input_ids", "token_type_ids", "attention_mask")}
    logits = run.model(features, training=False).logits.numpy()
    labels = np.array(validation["labels"])
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    picked = np.take_along_axis(log_probs, np.maximum(labels, 0)[..., None], -1)[..., 0]
    assert first["eval_loss"] == pytest.approx(-picked[labels != -100].mean(), rel=1e-4)


@pytest.mark.parametrize("model_type, head_apart", [("bert", True), ("distilbert", False)])
def test_mlm_loss_at_the_masked_positions_only_equals_the_full_logits_loss(model_type, head_apart):
    """BERT's head runs on the masked positions alone; DistilBERT's (part of it outside get_lm_head) is detected
    and scored from the full logits. Both give the loss of the full logits."""
    import tensorflow as tf
    from transformers import AutoConfig, TFAutoModelForMaskedLM

    sizes = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2} \
        if model_type == "bert" else {"dim": 16, "hidden_dim": 32, "n_layers": 1, "n_heads": 2}
    model = TFAutoModelForMaskedLM.from_config(AutoConfig.for_model(model_type, vocab_size=50, **sizes))
    assert head_applies_to_positions(model) is head_apart
    rng = np.random.default_rng(0)
    input_ids = rng.integers(5, 50, (3, 9))
    labels = np.where(rng.random((3, 9)) < 0.3, input_ids, -100)
    features = {"input_ids": tf.constant(input_ids), "attention_mask": tf.ones((3, 9), tf.int64)}
    loss, tokens = _token_loss_step(model, causal=False)(features, tf.constant(labels))
    logits = model(features, training=False).logits.numpy()
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    picked = np.take_along_axis(log_probs, np.maximum(labels, 0)[..., None], -1)[..., 0]
    assert int(tokens) == (labels != -100).sum()
    assert float(loss) == pytest.approx(-picked[labels != -100].sum(), rel=1e-4)


def test_clm_line_by_line_ignores_padding_in_the_loss(tiny_gpt2, text_files, tmp_path):
    from tf_finetune.training import FineTuneRun

    config = lm_config("clm", tiny_gpt2, text_files, tmp_path, line_by_line=True, per_device_eval_batch_size=1)
    single = FineTuneRun(config)
    assert single.preprocessor.pad_token == single.preprocessor.eos_token  # GPT-2 has none; padding uses eos
    assert single.splits["validation"].features["labels"] == single.splits["validation"].features["input_ids"]
    padded = FineTuneRun(config.replace(per_device_eval_batch_size=8))
    assert padded.evaluate()["eval_loss"] == pytest.approx(single.evaluate()["eval_loss"], rel=1e-5)


def test_train_mlm_writes_perplexity_and_a_masked_lm(tiny_bert, text_files, tmp_path):
    from transformers import TFAutoModelForMaskedLM

    from tf_finetune.training import train

    config = lm_config("mlm", tiny_bert, text_files, tmp_path, num_train_epochs=2)
    import transformers

    transformers_log = io.StringIO()
    handler = logging.StreamHandler(transformers_log)
    logging.getLogger("transformers").addHandler(handler)
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_warning()  # whatever an earlier test in this worker left it at
    try:
        results = train(config)
    finally:
        logging.getLogger("transformers").removeHandler(handler)
        transformers.logging.set_verbosity(verbosity)
    assert "newly initialized: ['mlm___cls']" in transformers_log.getvalue()  # the user is told the head is new
    output = tmp_path / "out"
    saved = json.loads((output / "all_results.json").read_text())
    assert saved["perplexity"] == pytest.approx(math.exp(saved["eval_loss"])) == pytest.approx(results["perplexity"])
    assert json.loads((output / "eval_results.json").read_text())["perplexity"] == saved["perplexity"]
    history = json.loads((output / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2]
    assert all(row["perplexity"] == pytest.approx(math.exp(row["eval_loss"])) for row in history)
    assert saved["best_epoch"] == 1 + int(np.argmin([row["eval_loss"] for row in history]))
    model = TFAutoModelForMaskedLM.from_pretrained(output)
    assert type(model).__name__ == "TFBertForMaskedLM"


def test_train_clm_learns_and_saves_a_causal_lm(tiny_gpt2, text_files, tmp_path):
    from transformers import AutoTokenizer, TFAutoModelForCausalLM

    from tf_finetune.training import train

    train(lm_config("clm", tiny_gpt2, text_files, tmp_path, num_train_epochs=2))
    output = tmp_path / "out"
    history = json.loads((output / "history.json").read_text())
    assert history[1]["eval_loss"] < history[0]["eval_loss"]
    assert json.loads((output / "all_results.json").read_text())["perplexity"] > 1
    assert type(TFAutoModelForCausalLM.from_pretrained(output)).__name__ == "TFGPT2LMHeadModel"
    assert AutoTokenizer.from_pretrained(output).pad_token == "<|endoftext|>"


@pytest.mark.parametrize(("changes", "message"), [
    ({"do_predict": True}, "writes no test predictions"),
    ({"text_column": ["a", "b"]}, "reads one text column"),
    ({"train_file": None}, "needs --train_file"),
    ({"block_size": 128, "train_file": "SHORT"}, "make no block of 128 tokens"),
    ({"train_file": "BLANK"}, "blank.txt holds no examples"),
    ({"train_file": "NUMBERS", "text_column": ["n"]}, "not text"),
    ({"train_file": "NUMBERS"}, "no 'text' column"),
    ({"validation_file": "SHORT", "line_by_line": True, "mlm_probability": 0.01}, "no validation token was masked"),
])
def test_bad_input_is_a_user_error(tiny_bert, text_files, tmp_path, changes, message):
    (tmp_path / "short.txt").write_text("the cat sat\n")
    (tmp_path / "blank.txt").write_text("\n  \n\n")
    (tmp_path / "numbers.csv").write_text("n\n1\n2\n")
    files = {"SHORT": "short.txt", "BLANK": "blank.txt", "NUMBERS": "numbers.csv"}
    for flag in ("train_file", "validation_file"):
        if changes.get(flag) in files:
            changes[flag] = str(tmp_path / files[changes[flag]])
    with pytest.raises(UserError, match=message):
        tokenized(lm_config("mlm", tiny_bert, text_files, tmp_path, **changes))


def test_mlm_needs_a_mask_token_and_a_masked_lm_model(tiny_gpt2, text_files, tmp_path):
    from transformers import AutoConfig

    from tf_finetune.models.loading import load_model

    with pytest.raises(UserError, match="no mask token"):
        tokenized(lm_config("mlm", tiny_gpt2, text_files, tmp_path))
    with pytest.raises(UserError, match="no TFAutoModelForMaskedLM"):
        load_model("TFAutoModelForMaskedLM", str(tiny_gpt2), AutoConfig.from_pretrained(tiny_gpt2))


def test_cli_reports_a_missing_file_in_one_line(tiny_bert, tmp_path, capsys):
    from tf_finetune.train import main

    code = main(["--task", "mlm", "--model_name_or_path", str(tiny_bert), "--train_file", str(tmp_path / "no.txt"),
                 "--output_dir", str(tmp_path / "out")])
    assert code == 2
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert last_line == f"error: train file {tmp_path / 'no.txt'} does not exist; check the path."


@pytest.mark.slow
def test_minilm_mlm_on_wikitext_lowers_perplexity(minilm_path, shared_data, tmp_path):
    from tf_finetune.training import FineTuneRun

    wikitext = shared_data / "wikitext-2"
    train_file, eval_file = tmp_path / "train.txt", tmp_path / "eval.txt"
    train_file.write_text("\n".join((wikitext / "valid.txt").read_text(encoding="utf-8").splitlines()[:200]))
    eval_file.write_text("\n".join((wikitext / "test.txt").read_text(encoding="utf-8").splitlines()[:40]))
    config = TrainConfig(task="mlm", model_name_or_path=str(minilm_path), train_file=str(train_file),
                         validation_file=str(eval_file), output_dir=str(tmp_path / "out"), block_size=128,
                         max_train_samples=96, per_device_train_batch_size=16,
                         per_device_eval_batch_size=16, learning_rate=1e-4, num_train_epochs=1, verbose=0)
    run = FineTuneRun(config)
    before = run.evaluate()
    run.compile()
    run.model.fit(run.train_dataset, epochs=1, verbose=0)
    after = run.evaluate()
    assert after["perplexity"] < before["perplexity"]


def test_search_fraction_counts_blocks_not_texts(tiny_bert, text_files, tmp_path):
    from tf_finetune.tuning.search import inspect_data

    config = lm_config("mlm", tiny_bert, text_files, tmp_path, tune="random", tune_train_fraction=0.5)
    blocks = len(tokenized(config)[0]["train"])
    assert blocks < 120  # fewer blocks than texts: a fraction of the texts would select them all
    assert inspect_data(config)[1] == math.ceil(blocks * 0.5)
