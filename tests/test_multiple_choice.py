"""Multiple choice: SWAG-style, question + choices and headerless (CODAH-like) files, features, collator, learning,
predictions, the predict command and bad input."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer, TFAutoModelForMultipleChoice

from conftest import command_error
from task_fixtures.multiple_choice import cue_rows, write_rows, write_swag_files
from tf_finetune.config import TrainConfig
from tf_finetune.core.errors import UserError
from tf_finetune.predict import main as predict_main
from tf_finetune.tasks import get_task
from tf_finetune.tasks.multiple_choice import MultipleChoiceCollator
from tf_finetune.train import main as train_main
from tf_finetune.training import train

TASK = get_task("multiple-choice")
CODAH_COLUMNS = ["category", "prompt", "a", "b", "c", "d", "gold"]
CODAH_FLAGS = ["--column_names", *CODAH_COLUMNS, "--context_column", "prompt", "--choice_columns", "a", "b", "c", "d",
               "--label_column", "gold"]


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def read(tmp_path: Path, train_file: str, **overrides) -> dict:
    """The task's raw splits for a train file (no validation)."""
    config = TrainConfig(task="multiple-choice", train_file=train_file, output_dir=str(tmp_path / "out"),
                         do_eval=False, **overrides)
    return TASK.load_raw_datasets(config)


def test_swag_csv_context_is_sent1_and_choices_continue_sent2(tmp_path):
    rows = cue_rows(3)
    train = read(tmp_path, write_rows(tmp_path / "train.csv", rows))["train"]
    assert train.column_names == ["context", "choices", "label"]
    assert train["context"] == [row["sent1"] for row in rows]
    assert train["choices"][1] == [f"it was really {rows[1][f'ending{i}']}" for i in range(4)]
    assert train["label"] == [0, 1, 2]


def test_question_choices_jsonl_takes_a_label_index_or_the_answer_text(tmp_path):
    choices = ["red", "blue", "green"]
    by_index = write_jsonl(tmp_path / "index.jsonl", [{"question": "what is the sky?", "choices": choices,
                                                      "label": 1}])
    by_text = write_jsonl(tmp_path / "text.jsonl", [{"question": "what is the sea?", "choices": choices,
                                                     "answer": "green"}, {"question": "what is the sun?",
                                                                          "choices": choices, "answer": "red"}])
    indexed = read(tmp_path, by_index)["train"]
    assert indexed["context"] == ["what is the sky?"] and indexed["choices"] == [choices] and indexed["label"] == [1]
    assert read(tmp_path, by_text)["train"]["label"] == [2, 0]


def test_named_columns_and_one_column_of_choice_lists(tmp_path):
    path = write_jsonl(tmp_path / "named.jsonl", [{"q": "what is the sky?", "options": ["red", "blue"], "gold": 1},
                                                  {"q": "what is the sun?", "options": ["red", "blue"], "gold": "0"}])
    train = read(tmp_path, path, context_column="q", choice_columns=["options"], label_column="gold")["train"]
    assert train["context"] == ["what is the sky?", "what is the sun?"] and train["label"] == [1, 0]
    assert train["choices"] == [["red", "blue"], ["red", "blue"]]


def test_headerless_tsv_with_column_names_keeps_a_stray_quote(tmp_path):
    lines = ['n\tThe man said "hi. He\tsat.\tran.\tsang.\tslept.\t2',
             "o\tThe dog ran. It\tsat.\tran.\tbarked.\tflew.\t1"]
    path = tmp_path / "codah.tsv"
    path.write_text("\n".join(lines) + "\n")
    config = dict(column_names=CODAH_COLUMNS, context_column="prompt", choice_columns=list("abcd"),
                  label_column="gold")
    train = read(tmp_path, str(path), **config)["train"]
    assert train["context"] == ['The man said "hi. He', "The dog ran. It"]
    assert train["choices"][1] == ["sat.", "ran.", "barked.", "flew."] and train["label"] == [2, 1]


def tokenised(tiny_bert, tmp_path, max_seq_length=128, rows=None):
    rows = rows or cue_rows(4)
    config = TrainConfig(task="multiple-choice", train_file=write_rows(tmp_path / "train.csv", rows),
                         output_dir=str(tmp_path / "out"), do_eval=False, max_seq_length=max_seq_length)
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    return TASK.tokenize(TASK.load_raw_datasets(config), tokenizer, config)["train"], tokenizer


def test_features_hold_one_sequence_per_choice(tiny_bert, tmp_path):
    split, tokenizer = tokenised(tiny_bert, tmp_path)
    features = split.features
    assert set(features.column_names) == {"input_ids", "token_type_ids", "attention_mask", "labels"}
    assert [len(ids) for ids in features["input_ids"]] == [4, 4, 4, 4]
    first = features[0]
    assert tokenizer.decode(first["input_ids"][2]) == f"[CLS] {split.examples[0]['context']} [SEP] " \
                                                      f"{split.examples[0]['choices'][2]} [SEP]"
    assert features["labels"] == [0, 1, 2, 3]


def test_a_choice_longer_than_max_seq_length_is_truncated(tiny_bert, tmp_path):
    long_row = {**cue_rows(1)[0], "ending1": " ".join(["good"] * 40)}
    split, _ = tokenised(tiny_bert, tmp_path, max_seq_length=16, rows=[long_row])
    lengths = [len(ids) for ids in split.features[0]["input_ids"]]
    assert max(lengths) == 16 and lengths[0] < 16


@pytest.mark.parametrize("multiple", [None, 8])
def test_collator_pads_every_choice_to_one_length(tiny_bert, tmp_path, multiple):
    split, tokenizer = tokenised(tiny_bert, tmp_path)
    rows = split.features.to_list()
    rows[1]["input_ids"][3] = rows[1]["input_ids"][3][:3] + [tokenizer.sep_token_id]  # one short choice
    for key in ("token_type_ids", "attention_mask"):
        rows[1][key][3] = rows[1][key][3][:4]
    longest = max(len(ids) for row in rows for ids in row["input_ids"])
    batch = MultipleChoiceCollator(tokenizer, pad_to_multiple_of=multiple, return_tensors="np")(rows)
    length = longest if multiple is None else -(-longest // multiple) * multiple
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (4, 4, length)
    assert batch["attention_mask"][1, 3].sum() == 4 and (batch["input_ids"][1, 3, 4:] == tokenizer.pad_token_id).all()
    assert batch["labels"].tolist() == [0, 1, 2, 3] and batch["labels"].dtype == np.int64
    unlabelled = [{key: value for key, value in row.items() if key != "labels"} for row in rows]
    assert "labels" not in MultipleChoiceCollator(tokenizer, return_tensors="np")(unlabelled)


@pytest.fixture(scope="module")
def trained(tiny_bert, tmp_path_factory):
    """A tiny model trained on the cue set, with its results and test examples."""
    directory = tmp_path_factory.mktemp("multiple-choice")
    paths = write_swag_files(directory, {"train": 96, "valid": 40, "test": 6})
    config = TrainConfig(task="multiple-choice", model_name_or_path=str(tiny_bert), train_file=paths["train"],
                         validation_file=paths["valid"], test_file=paths["test"], do_predict=True,
                         output_dir=str(directory / "out"), num_train_epochs=6, learning_rate=2e-3,
                         per_device_train_batch_size=8, verbose=0)
    return train(config), Path(config.output_dir), cue_rows(6, seed=2)


def test_a_tiny_model_learns_the_cue_set(trained):
    results, _, _ = trained
    assert results["eval_accuracy"] >= 0.6, results  # chance is 0.25
    assert 0 < results["eval_loss"] < np.log(4)


def test_predictions_file_names_each_chosen_choice(trained):
    _, out, test_rows = trained
    lines = (out / "predict_results_multiple-choice.txt").read_text().splitlines()
    assert lines[0] == "index\tprediction\tchoice" and len(lines) == 7
    for number, (line, row) in enumerate(zip(lines[1:], test_rows)):
        index, prediction, text = line.split("\t")
        assert int(index) == number and text == f"it was really {row[f'ending{prediction}']}"
    chosen = [int(line.split("\t")[1]) for line in lines[1:]]
    assert sum(p == row["label"] for p, row in zip(chosen, test_rows)) >= 4


def printed_probabilities(output: str) -> list[list[float]]:
    """The choice probabilities of each input block the predict command printed."""
    blocks = re.split(r"\n(?=\S)", output.strip())
    return [[float(value) for value in re.findall(r"^  [* ] (\d\.\d{4})  ", block, re.M)] for block in blocks]


def test_predict_command_picks_a_choice_and_prints_probabilities(trained, tmp_path, capsys):
    _, out, _ = trained
    items = write_jsonl(tmp_path / "items.jsonl", [{"context": "the plot was very superb.",
                                                    "choices": ["it was superb", "it was awful", "it was dull"]}])
    code = predict_main(["--model", str(out), "the film was very lovely.", "--choices", "it was poor",
                         "it was lovely", "--file", items])
    printed = capsys.readouterr().out
    assert code == 0
    probabilities = printed_probabilities(printed)
    assert [len(p) for p in probabilities] == [2, 3]
    assert all(abs(sum(p) - 1) < 2e-4 for p in probabilities)
    assert "  answer: it was lovely" in printed and "  * " + f"{max(probabilities[0]):.4f}  it was lovely" in printed


@pytest.mark.parametrize("args, message", [
    (["the film was good"], "has 0 choice(s)"),
    (["the film was good", "--choices", "it was good"], "has 1 choice(s)"),
    (["the film was good", "--choices", "it was good", " "], "or an empty one"),
    (["--choices", "a", "b"], "no input: pass a context"),
])
def test_predict_command_needs_two_choices(trained, capsys, args, message):
    _, out, _ = trained
    assert predict_main(["--model", str(out), *args]) == 2
    error = command_error(capsys.readouterr().err)
    assert message in error


def test_predict_file_lines_must_be_json_objects(trained, tmp_path, capsys):
    _, out, _ = trained
    path = tmp_path / "items.jsonl"
    path.write_text('{"context": "a", "choices": ["b", "c"]}\nnot json\n')
    assert predict_main(["--model", str(out), "--file", str(path)]) == 2
    assert f"--file {path} line 2 is not a JSON object" in capsys.readouterr().err


def bad_files(tmp_path: Path) -> dict[str, str]:
    rows = cue_rows(4)
    question = {"question": "what is it?", "choices": ["red", "blue", "green"], "label": 0}
    return {
        "empty ending": write_rows(tmp_path / "empty.csv", [rows[0], {**rows[1], "ending2": ""}]),
        "label out of range": write_rows(tmp_path / "range.csv", [rows[0], rows[1], {**rows[2], "label": 4}]),
        "no label": write_rows(tmp_path / "nolabel.csv", [rows[0], {**rows[1], "label": ""}]),
        "one choice": write_jsonl(tmp_path / "one.jsonl", [question, {**question, "choices": ["red"]}]),
        "answer not a choice": write_jsonl(tmp_path / "answer.jsonl", [
            {"question": "what is it?", "choices": ["red", "blue"], "answer": "pink"}]),
        "uneven choices": write_jsonl(tmp_path / "uneven.jsonl", [question, question, {**question,
                                                                                      "choices": ["a", "b"]}]),
        "no context column": write_jsonl(tmp_path / "noctx.jsonl", [{"text": "a", "choices": ["b", "c"],
                                                                     "label": 0}]),
        "codah": write_rows(tmp_path / "codah.tsv", [{"category": "n", "prompt": "The dog ran. It",
                                                      **{c: "sat." for c in "abcd"}, "gold": 1}] * 3,
                            delimiter="\t", header=False),
        "swag": write_rows(tmp_path / "swag.csv", rows),
    }


BAD_INPUT = {
    "empty ending": (["--train_file", "empty.csv"], ["empty.csv line 3 has an empty choice 2 (column 'ending2')"]),
    "label out of range": (["--train_file", "range.csv"], ["range.csv line 4 has label 4, out of range for its "
                                                           "4 choices"]),
    "no label": (["--train_file", "nolabel.csv"], ["nolabel.csv line 3 has no label"]),
    "one choice": (["--train_file", "one.jsonl"], ["one.jsonl line 2 has 1 choice(s)"]),
    "answer not a choice": (["--train_file", "answer.jsonl"], ["answer.jsonl line 1 has answer 'pink', which is "
                                                               "none of its choices (red | blue)"]),
    "uneven choices": (["--train_file", "uneven.jsonl"], ["uneven.jsonl line 3 has 2 choices but", "line 1 has 3"]),
    "no context column": (["--train_file", "noctx.jsonl"], ["columns: text, choices, label", "--context_column"]),
    "missing context column": (["--train_file", "swag.csv", "--context_column", "prompt"],
                               ["no column 'prompt' (columns: sent1, sent2, ending0", "set --context_column"]),
    "missing choice column": (["--train_file", "swag.csv", "--choice_columns", "ending0", "ending9"],
                              ["no column 'ending9'", "set --choice_columns"]),
    "missing label column": (["--train_file", "swag.csv", "--label_column", "gold"],
                             ["no column 'gold'", "set --label_column"]),
    "too few column names": (["--train_file", "codah.tsv", "--column_names", *CODAH_COLUMNS[:6], "--context_column",
                              "prompt", "--choice_columns", "a", "b", "c", "d", "--label_column", "gold"],
                             ["codah.tsv line 1 has 7 columns but --column_names names 6"]),
    "column names of a json file": (["--train_file", "one.jsonl", "--column_names", "a", "b"],
                                    ["--column_names names the columns of a CSV/TSV"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_one_line_before_training(case, tiny_bert, tmp_path, capsys):
    files = bad_files(tmp_path)
    args, messages = BAD_INPUT[case]
    args = [str(Path(files["swag"]).parent / arg) if arg.endswith((".csv", ".tsv", ".jsonl")) else arg
            for arg in args]
    code = train_main(["--task", "multiple-choice", "--model_name_or_path", str(tiny_bert), "--do_eval", "false",
                       "--output_dir", str(tmp_path / "out"), *args])
    error = command_error(capsys.readouterr().err)
    assert code == 2, error
    assert all(message in error for message in messages), error
    assert not (tmp_path / "out").exists()


def test_a_headerless_file_read_without_column_names_asks_for_them(tmp_path):
    path = write_rows(tmp_path / "codah.tsv", [{"category": "n", "prompt": "The dog ran. It",
                                                **{c: f"{c} sat." for c in "abcd"}, "gold": 1}] * 2,
                      delimiter="\t", header=False)
    with pytest.raises(UserError, match="--column_names for a CSV/TSV without a header row"):
        read(tmp_path, path)


@pytest.mark.slow
def test_codah_command_trains_minilm_and_the_output_predicts(minilm_path, shared_data, tmp_path):
    codah = shared_data / "multiple_choice" / "codah" / "fold_0"
    out = tmp_path / "codah"
    command = [sys.executable, "-m", "tf_finetune.train", "--task", "multiple-choice", "--model_name_or_path",
               str(minilm_path), "--train_file", str(codah / "train.tsv"), "--validation_file", str(codah / "dev.tsv"),
               "--test_file", str(codah / "test.tsv"), "--do_predict", *CODAH_FLAGS, "--output_dir", str(out),
               "--max_train_samples", "192", "--max_eval_samples", "100", "--max_predict_samples", "8",
               "--max_seq_length", "48", "--num_train_epochs", "2", "--learning_rate", "1e-4",
               "--per_device_train_batch_size", "16", "--warmup_ratio", "0.1", "--verbose", "0"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((out / "all_results.json").read_text())
    assert results["eval_samples"] == 100 and results["train_samples"] == 192
    assert results["eval_accuracy"] > 0.3, results  # chance is 0.25
    assert len((out / "predict_results_multiple-choice.txt").read_text().splitlines()) == 9

    model = TFAutoModelForMultipleChoice.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    encoded = tokenizer(["The dog is hungry. It"] * 3, ["eats.", "flies.", "sings."], padding=True,
                        return_tensors="np")
    assert model({key: value[None] for key, value in encoded.items()}).logits.shape == (1, 3)

    predicted = subprocess.run([sys.executable, "-m", "tf_finetune.predict", "--model", str(out),
                                "The dog is hungry. It", "--choices", "eats its food.", "flies away."],
                               capture_output=True, text=True, timeout=300)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert abs(sum(printed_probabilities(predicted.stdout)[0]) - 1) < 2e-4
