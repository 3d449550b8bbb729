"""Chat fine-tuning: layouts, answer-only labels, truncation, packing, generation samples, the predict command and
bad conversations, with a tiny Mistral whose tokenizer has a ChatML template (and a GPT-2 without one)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from conftest import build_tiny_bert
from task_fixtures.chat import QUESTION, write_conversations
from tf_finetune.config import TrainConfig
from tf_finetune.core.errors import UserError
from tf_finetune.models.functions import xla_generate
from tf_finetune.models.generation import generate_answers
from tf_finetune.models.loading import load_tokenizer
from tf_finetune.predict import main as predict_main
from tf_finetune.tasks import get_task
from tf_finetune.tasks.chat import DEFAULT_CHAT_TEMPLATE
from tf_finetune.training import FineTuneRun, train

CHAT = get_task("chat")
TURNS = [{"role": "system", "content": "answer with one word"},
         {"role": "user", "content": "is the film good"}, {"role": "assistant", "content": "yes"},
         {"role": "user", "content": "is the plot bad"}, {"role": "assistant", "content": "no"}]


def _write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def _splits(model: Path, tmp_path: Path, rows: list[dict], **changes):
    config = TrainConfig(task="chat", model_name_or_path=str(model), output_dir=str(tmp_path / "out"),
                         train_file=_write_jsonl(tmp_path / "train.jsonl", rows), do_eval=False, **changes)
    tokenizer = load_tokenizer(str(model))
    return CHAT.tokenize(CHAT.load_raw_datasets(config), tokenizer, config), tokenizer


def _labelled_text(tokenizer, features, row: int) -> str:
    labels = [token for token in features[row]["labels"] if token != -100]
    return tokenizer.decode(labels)


def test_only_the_assistant_turns_are_labelled(tiny_mistral, tmp_path):
    splits, tokenizer = _splits(tiny_mistral, tmp_path, [{"messages": TURNS}])
    features = splits["train"].features
    assert _labelled_text(tokenizer, features, 0) == "yes<|im_end|>\nno<|im_end|>\n"
    assert tokenizer.decode(features[0]["input_ids"]) == tokenizer.apply_chat_template(TURNS, tokenize=False)


def test_train_on_prompt_labels_every_token(tiny_mistral, tmp_path):
    splits, _ = _splits(tiny_mistral, tmp_path, [{"messages": TURNS}], train_on_prompt=True)
    assert splits["train"].features[0]["labels"] == splits["train"].features[0]["input_ids"]


@pytest.mark.parametrize("row, changes", [
    ({"prompt": "is the film good", "completion": "yes"}, {}),
    ({"instruction": "is the film good", "input": "", "output": "yes"}, {}),
    ({"question": "is the film good", "answer": "yes"}, {"text_column": ["question", "answer"]}),
])
def test_every_layout_becomes_the_same_conversation(row, changes, tiny_mistral, tmp_path):
    splits, tokenizer = _splits(tiny_mistral, tmp_path, [row], **changes)
    expected = tokenizer.apply_chat_template([{"role": "user", "content": "is the film good"},
                                              {"role": "assistant", "content": "yes"}], tokenize=False)
    assert tokenizer.decode(splits["train"].features[0]["input_ids"]) == expected
    assert _labelled_text(tokenizer, splits["train"].features, 0) == "yes<|im_end|>\n"


def test_alpaca_history_becomes_earlier_turns(tiny_mistral, tmp_path):
    row = {"instruction": "is the plot bad", "input": "", "output": "no", "history": [["is the film good", "yes"]]}
    splits, tokenizer = _splits(tiny_mistral, tmp_path, [row])
    assert _labelled_text(tokenizer, splits["train"].features, 0) == "yes<|im_end|>\nno<|im_end|>\n"


def test_a_tokenizer_without_template_gets_chatml_closed_by_its_eos(tiny_gpt2, tmp_path):
    splits, tokenizer = _splits(tiny_gpt2, tmp_path, [{"messages": TURNS[1:3]}])
    assert tokenizer.chat_template == DEFAULT_CHAT_TEMPLATE
    assert _labelled_text(tokenizer, splits["train"].features, 0) == "yes<|endoftext|>\n"


def test_long_history_is_cut_from_the_left_and_cut_answers_are_counted(tiny_mistral, tmp_path, caplog):
    long_history = [{"role": "user", "content": "the film " * 40}, {"role": "assistant", "content": "good " * 3},
                    {"role": "user", "content": "and the plot"}, {"role": "assistant", "content": "bad"}]
    long_answer = [{"role": "user", "content": "why"}, {"role": "assistant", "content": "the movie " * 40}]
    no_answer_left = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yes"},
                      {"role": "user", "content": "the film " * 40}]
    with caplog.at_level(logging.WARNING):
        splits, tokenizer = _splits(tiny_mistral, tmp_path, [{"messages": t} for t in
                                                             (long_history, long_answer, no_answer_left)],
                                    max_seq_length=32)
    features = splits["train"].features
    assert len(features) == 2 and all(len(ids) == 32 for ids in features["input_ids"])
    assert _labelled_text(tokenizer, features, 0).endswith("bad<|im_end|>\n")
    assert "1 of 3 train conversations are longer" in caplog.text
    assert "Dropped 1 train conversations with no answer token" in caplog.text


def test_packing_fills_rows_and_keeps_each_conversations_labels(tiny_mistral, tmp_path, caplog):
    rows = [{"messages": [{"role": "user", "content": sentence},
                          {"role": "assistant", "content": label}]}
            for sentence, label in [("good", "positive"), ("the plot was very bad and boring", "negative")] * 8]
    (tmp_path / "plain").mkdir()
    (tmp_path / "packed").mkdir()
    plain, _ = _splits(tiny_mistral, tmp_path / "plain", rows, max_seq_length=128)
    with caplog.at_level(logging.INFO):
        packed, _ = _splits(tiny_mistral, tmp_path / "packed", rows, max_seq_length=128, packing=True,
                            per_device_train_batch_size=4)
    lengths = [len(ids) for ids in packed["train"].features["input_ids"]]
    assert max(lengths) <= 128 and len(lengths) <= len(rows) / 3
    assert len(packed["train"]) == len(rows), "the split still counts conversations"
    flat = [token for ids in plain["train"].features["labels"] for token in ids]
    assert [token for ids in packed["train"].features["labels"] for token in ids] == flat
    assert "Packing: 16 conversations in" in caplog.text


def test_batched_generation_matches_one_at_a_time(tiny_mistral):
    from transformers import TFAutoModelForCausalLM

    model, tokenizer = TFAutoModelForCausalLM.from_pretrained(tiny_mistral), load_tokenizer(str(tiny_mistral))
    conversations = [[{"role": "user", "content": text}] for text in ("the film", "is the plot of the movie bad", "a")]
    batched = generate_answers(model, tokenizer, conversations, max_new_tokens=4, batch_size=3)
    single = [generate_answers(model, tokenizer, [turns], max_new_tokens=4, batch_size=1)[0]
              for turns in conversations]
    assert batched == single and all(isinstance(answer, str) for answer in batched)
    # Under XLA: prompts padded to 64 tokens and the short last batch filled to two rows, one compile for both.
    assert generate_answers(model, tokenizer, conversations, max_new_tokens=4, batch_size=2,
                            jit_compile=True) == batched
    assert xla_generate(model).experimental_get_tracing_count() == 1


def test_chat_with_lora_writes_generation_samples_and_answers_through_predict(tiny_mistral, tmp_path, capsys):
    (tmp_path / "data").mkdir()
    train_file = write_conversations(tmp_path / "data" / "train.jsonl", 48, 0)
    valid_file = write_conversations(tmp_path / "data" / "valid.jsonl", 8, 1)
    output_dir = tmp_path / "out"
    results = train(TrainConfig(task="chat", model_name_or_path=str(tiny_mistral), train_file=train_file,
                                validation_file=valid_file, output_dir=str(output_dir), num_train_epochs=2,
                                per_device_train_batch_size=8, learning_rate=5e-3, lora_rank=4, generation_eval=3,
                                max_new_tokens=4, max_seq_length=64, verbose=0))
    assert np.isfinite(results["eval_loss"]) and results["perplexity"] > 1
    for epoch in (1, 2):
        rows = [json.loads(line) for line in (output_dir / f"generations_epoch{epoch}.jsonl").read_text().splitlines()]
        assert len(rows) == 3 and rows[0]["reference"] in ("positive", "negative")
        assert rows[0]["prompt"][-1]["role"] == "user" and isinstance(rows[0]["generated"], str)
    prompts = _write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": f"{QUESTION} the film was very good"},
                                                        {"messages": [{"role": "user", "content": "hi"}]}])
    capsys.readouterr()
    assert predict_main(["--model", str(output_dir), "--file", prompts, "--system", "be brief",
                         "--max_new_tokens", "3", "what is it"]) == 0  # the task comes from run_config.json
    assert len(capsys.readouterr().out.splitlines()) >= 3


@pytest.mark.parametrize("row, message", [
    ({"messages": [{"role": "user", "content": "hi"}]}, "train example 1 has no assistant turn"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "yes"}]},
     "train example 1: unknown role 'bot'"),
    ({"messages": "hi there"}, "train example 1: messages must be a non-empty list"),
    ({"text": "hi"}, "none of chat's layouts"),
])
def test_bad_conversations_name_the_example(row, message, tiny_mistral, tmp_path):
    good = {"messages": TURNS[1:3]}
    config = TrainConfig(task="chat", model_name_or_path=str(tiny_mistral), output_dir=str(tmp_path / "out"),
                         train_file=_write_jsonl(tmp_path / "train.jsonl", [good, row] if "text" not in row else [row]),
                         do_eval=False)
    with pytest.raises(UserError, match=message):
        CHAT.load_raw_datasets(config)


def test_a_template_that_cannot_render_an_example_is_named(tiny_mistral, tmp_path):
    template = tmp_path / "strict.jinja"
    template.write_text("{% for m in messages %}{% if m['content'] == 'boom' %}{{ raise_exception('no boom') }}"
                        "{% endif %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}")
    rows = [{"messages": TURNS[1:3]}, {"messages": [{"role": "user", "content": "boom"},
                                                    {"role": "assistant", "content": "yes"}]}]
    with pytest.raises(UserError, match="the chat template cannot render train example 1: no boom"):
        _splits(tiny_mistral, tmp_path, rows, chat_template=str(template))


def test_chat_on_a_model_without_a_causal_lm_head_fails_before_tokenising(tmp_path):
    from transformers import DistilBertConfig

    model_dir = build_tiny_bert(tmp_path / "bert")
    DistilBertConfig(vocab_size=100, dim=32, n_layers=1, n_heads=2, hidden_dim=37).save_pretrained(model_dir)
    config = TrainConfig(task="chat", model_name_or_path=str(model_dir), output_dir=str(tmp_path / "out"),
                         train_file=_write_jsonl(tmp_path / "train.jsonl", [{"messages": TURNS}]), do_eval=False)
    with pytest.raises(UserError, match="is a distilbert model, and transformers has no TFAutoModelForCausalLM"):
        FineTuneRun(config)


def test_shared_lima_and_gsm8k_become_conversations(shared_data, tiny_mistral, tmp_path):
    lima = shared_data / "chat" / "lima" / "lima.json"
    gsm8k = shared_data / "chat" / "gsm8k" / "test.jsonl"
    if not lima.is_file() or not gsm8k.is_file():
        pytest.skip(f"the shared chat data is not at {lima.parent.parent}")
    config = TrainConfig(task="chat", model_name_or_path=str(tiny_mistral), train_file=str(lima), do_eval=False)
    conversations = CHAT.load_raw_datasets(config)["train"]["messages"]
    assert len(conversations) == 1029 and sum(len(turns) > 2 for turns in conversations) == 29
    multi_turn = next(turns for turns in conversations if len(turns) > 2)
    assert [turn["role"] for turn in multi_turn][:3] == ["user", "assistant", "user"]
    config = config.replace(train_file=str(gsm8k), text_column=["question", "answer"], max_train_samples=50)
    splits = CHAT.tokenize(CHAT.load_raw_datasets(config), load_tokenizer(str(tiny_mistral)), config)
    labelled = _labelled_text(load_tokenizer(str(tiny_mistral)), splits["train"].features, 0)
    assert "####" in labelled and labelled.endswith("<|im_end|>\n")
