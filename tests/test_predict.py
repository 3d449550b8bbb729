"""`python -m tf_finetune.predict`: fill-mask, text-generation and text-classification on tiny models; bad input."""
from __future__ import annotations

import re

import pytest

from conftest import build_tiny_tokenizer, sentiment_rows
from tf_finetune.predict import build_parser, main, parse_args, predict
from tf_finetune.tasks import registered, task_for_pipeline
from tf_finetune.tasks.text_classification import TextClassificationTask

SCORE_LINE = re.compile(r"^  \S+\s+\d\.\d{4}$")


@pytest.fixture(scope="module")
def tiny_masked_lm(tmp_path_factory):
    """A tiny BERT saved with its masked-LM head (architectures: BertForMaskedLM)."""
    import tf_finetune  # noqa: F401
    from transformers import BertConfig, TFBertForMaskedLM

    directory = tmp_path_factory.mktemp("tiny-mlm")
    tokenizer = build_tiny_tokenizer(directory)
    model = TFBertForMaskedLM(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, intermediate_size=64, max_position_embeddings=128))
    model(model.dummy_inputs)
    model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory):
    """A tiny BERT sentiment classifier saved as our text-classification runs save it (id2label names), trained on
    `sentiment_rows` until it labels their sentences by their sentiment word."""
    import numpy as np
    import tf_finetune  # noqa: F401
    import tf_keras
    from transformers import BertConfig, TFBertForSequenceClassification

    directory = tmp_path_factory.mktemp("tiny-classifier")
    tokenizer = build_tiny_tokenizer(directory)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, id2label={0: "negative", 1: "positive"},
                        label2id={"negative": 0, "positive": 1})
    tf_keras.utils.set_random_seed(0)
    model = TFBertForSequenceClassification(config)
    rows = sentiment_rows(64)
    model.compile(optimizer=tf_keras.optimizers.Adam(3e-3))
    model.fit(dict(tokenizer([text for text, _ in rows], padding=True, return_tensors="np")),
              np.array([config.label2id[label] for _, label in rows]), batch_size=16, epochs=10, verbose=0)
    model.save_pretrained(directory)
    return directory


def run(capsys, *argv) -> tuple[int, list[str], str]:
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


def test_fill_mask_prints_top_k_tokens_with_scores(tiny_masked_lm, capsys):
    code, lines, _ = run(capsys, "--model", tiny_masked_lm, "--top_k", 3, "the cat [MASK] on the mat")
    assert code == 0
    assert lines[0] == "the cat [MASK] on the mat"
    assert len(lines) == 4 and all(SCORE_LINE.match(line) for line in lines[1:])
    scores = [float(line.split()[-1]) for line in lines[1:]]
    assert scores == sorted(scores, reverse=True)


def test_fill_mask_with_two_masks_lists_each(tiny_masked_lm, capsys):
    code, lines, _ = run(capsys, "--model", tiny_masked_lm, "--top_k", 2, "the [MASK] sat on the [MASK]")
    assert code == 0
    assert lines[1] == "  mask 1:" and lines[4] == "  mask 2:" and len(lines) == 7


def test_fill_mask_on_a_bare_encoder_gets_a_new_head(tiny_bert, capsys):
    code, lines, _ = run(capsys, "--task", "fill-mask", "--model", tiny_bert, "--top_k", 1, "a [MASK] dog")
    assert code == 0 and len(lines) == 2


def test_text_generation_is_greedy_and_continues_the_prompt(tiny_gpt2, capsys):
    args = parse_args(["--model", str(tiny_gpt2), "--max_new_tokens", "4", "the cat sat", "a dog"])
    generated = predict(args)  # one text per input (a random tiny model may generate newlines)
    assert generated == predict(args)
    assert len(generated) == 2
    assert generated[0].startswith("the cat sat") and len(generated[0]) > len("the cat sat")
    assert generated[1].startswith("a dog")
    code, lines, _ = run(capsys, "--model", tiny_gpt2, "--max_new_tokens", 4, "the cat sat", "a dog")
    assert code == 0 and "\n".join(lines) == "\n".join(generated)


def test_text_classification_prints_a_label_per_line(tiny_classifier, tmp_path, capsys):
    inputs = tmp_path / "inputs.txt"
    inputs.write_text("the film was very good\n\nthe plot was very boring\n")
    code, lines, _ = run(capsys, "--model", tiny_classifier, "--file", inputs)
    assert code == 0
    rows = [line.split("\t") for line in lines]
    assert [row[2] for row in rows] == ["the film was very good", "the plot was very boring"]
    assert [row[0] for row in rows] == ["positive", "negative"] and all(float(row[1]) > 0.9 for row in rows)



def test_text_classification_batches_by_length_and_agrees_with_the_pipeline(tiny_classifier, capsys):
    from tf_finetune.models.loading import load_model, load_model_config, load_tokenizer
    from tf_finetune.tasks.base import text_pipeline

    texts = ["good", "the plot was dull and the acting was worse than the plot", "a fine film", "bad",
             "the film was good , the music was good and the actors were good"]
    code, lines, _ = run(capsys, "--model", tiny_classifier, "--batch_size", "2", *texts)
    assert code == 0
    model = load_model("TFAutoModelForSequenceClassification", str(tiny_classifier), load_model_config(str(tiny_classifier)))
    classifier = text_pipeline("text-classification", model, load_tokenizer(str(tiny_classifier)))
    for line, text, expected in zip(lines, texts, classifier(texts)):
        label, score, printed = line.split("\t")
        assert (label, printed) == (expected["label"], text)
        assert float(score) == pytest.approx(expected["score"], abs=2e-4)

class CaptionFixture(TextClassificationTask):
    """A second task with a --max_new_tokens of its own (text-generation has one)."""

    name = "caption-fixture"
    pipeline_tag = "image-to-text"

    def add_predict_arguments(self, parser) -> None:
        parser.add_argument("--max_new_tokens", type=int, default=7, help="image-to-text: tokens per caption.")


def test_tasks_flags_are_their_own_and_two_tasks_may_share_a_flag(capsys):
    with registered(CaptionFixture()):
        caption, generation = task_for_pipeline("image-to-text"), task_for_pipeline("text-generation")
        assert build_parser(caption).parse_args(["--model", "m"]).max_new_tokens == 7
        assert build_parser(generation).parse_args(["--model", "m"]).max_new_tokens == 20
        assert parse_args(["--task", "image-to-text", "--model", "m", "--max_new_tokens", "3"]).max_new_tokens == 3
        with pytest.raises(SystemExit):
            main(["--task", "image-to-text", "--help"])
        help_text = capsys.readouterr().out
        assert "tokens per caption" in help_text and "tokens to add" not in help_text
        with pytest.raises(SystemExit):
            main(["--task", "text-generation", "--help"])
        help_text = capsys.readouterr().out
        assert "tokens to add" in help_text and "tokens per caption" not in help_text and "--top_k" not in help_text


def test_the_models_task_gives_the_flags_and_another_tasks_flag_is_refused(tiny_masked_lm, capsys):
    assert parse_args(["--model", str(tiny_masked_lm), "--top_k", "3", "a [MASK]"]).top_k == 3  # fill-mask's
    with pytest.raises(SystemExit) as exited:
        main(["--model", str(tiny_masked_lm), "--max_new_tokens", "3", "a [MASK]"])
    assert exited.value.code == 2 and "unrecognized arguments: --max_new_tokens" in capsys.readouterr().err


@pytest.mark.parametrize(("args", "message"), [
    (["--model", "{missing}", "a [MASK]"], "model directory .* does not exist"),
    (["--model", "{mlm}", "no mask here"], r"input 1 has no \[MASK\] token"),
    (["--model", "{mlm}"], "no input text"),
    (["--model", "{mlm}", "  "], "no input text"),
    (["--model", "{mlm}", "--file", "{missing}"], "--file .* does not exist"),
    (["--model", "{mlm}", "--top_k", "0", "a [MASK]"], "--top_k must be a positive number"),
    (["--model", "{mlm}", "--batch_size", "0", "a [MASK]"], "--batch_size must be positive"),
    (["--model", "{bare}", "a [MASK]"], r"cannot tell the task .*\(BertModel\); pass --task"),
    (["--task", "fill-mask", "--model", "{gpt2}", "a [MASK]"], "the tokenizer of .* has no mask token"),
])
def test_bad_input_is_one_line_and_exit_2(tiny_masked_lm, tiny_bert, tiny_gpt2, tmp_path, capsys, args, message):
    paths = {"missing": tmp_path / "missing", "mlm": tiny_masked_lm, "bare": tiny_bert, "gpt2": tiny_gpt2}
    code, lines, err = run(capsys, *[arg.format(**paths) for arg in args])
    assert code == 2 and lines == []
    assert re.match(f"error: {message}", err.strip().splitlines()[-1])
