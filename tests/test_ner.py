"""The ner task: CoNLL and JSON reading, tag names, label alignment, seqeval scores, learning, the CoNLL predictions
file, the predict command, bad input, and MiniLM on CoNLL-2003 end to end."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import datasets
import numpy as np
import pytest
import tensorflow as tf
from seqeval.metrics import accuracy_score, classification_report, f1_score, precision_score, recall_score
from transformers import AutoTokenizer, TFAutoModelForTokenClassification

from conftest import command_error
from task_fixtures.token_classification import tagged_sentences, write_conll
from tf_finetune.config import TrainConfig
from tf_finetune.core.errors import UserError
from tf_finetune.metrics import compute_metrics, load_metric
from tf_finetune.models.loading import load_tokenizer
from tf_finetune.predict import main as predict_main
from tf_finetune.tasks import get_task
from tf_finetune.tasks.token_classification import check_tokenizer, read_conll
from tf_finetune.train import main as train_main
from tf_finetune.training import FineTuneRun, train

TASK = get_task("ner")


def write_jsonl(path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def ner_config(tiny_bert, tmp_path, **changes) -> TrainConfig:
    """A run on 120 training and 30 validation sentences of the fixture's person/place tagging."""
    values = dict(task="ner", model_name_or_path=str(tiny_bert), output_dir=str(tmp_path / "out"),
                  train_file=write_conll(tmp_path / "train.txt", tagged_sentences(120, 0)),
                  validation_file=write_conll(tmp_path / "valid.txt", tagged_sentences(30, 1)),
                  num_train_epochs=1, per_device_train_batch_size=8, learning_rate=5e-3, verbose=0)
    return TrainConfig(**{**values, **changes})


def tokenised(config: TrainConfig):
    tokenizer = load_tokenizer(config.model_name_or_path)
    return TASK.tokenize(TASK.load_raw_datasets(config), tokenizer, config), tokenizer


# Reading

def test_conll_reader_skips_docstart_and_splits_sentences_at_blank_lines(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n\n"
                    "Peter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n-DOCSTART- -X- -X- O\n"
                    "BRUSSELS NNP B-NP B-LOC")  # no final blank line, nor a final newline
    sentences = read_conll(str(path), "train", None)
    assert sentences[:] == {"tokens": [["EU", "rejects"], ["Peter", "Blackburn"], ["BRUSSELS"]],
                            "ner_tags": [["B-ORG", "O"], ["B-PER", "I-PER"], ["B-LOC"]]}


def test_reading_and_tokenising_are_cached_and_a_changed_file_is_read_again(tiny_bert, tmp_path):
    config = ner_config(tiny_bert, tmp_path)
    first = tokenised(config)[0]["train"].features.cache_files[0]["filename"]
    assert tokenised(config)[0]["train"].features.cache_files[0]["filename"] == first  # reused, not tokenised again
    write_conll(tmp_path / "train.txt", tagged_sentences(60, 5))
    changed = tokenised(config)[0]["train"]
    assert len(changed) == 60 and changed.features.cache_files[0]["filename"] != first


def test_label_column_index_picks_the_tag_column(tmp_path):
    path = tmp_path / "train.conll"
    path.write_text("EU NNP B-NP B-ORG\nrejects VBZ B-VP O\n")
    assert read_conll(str(path), "train", 2)["ner_tags"] == [["B-NP", "B-VP"]]
    assert read_conll(str(path), "train", 1)["ner_tags"] == [["NNP", "VBZ"]]


def test_conll_tags_become_sorted_class_labels_saved_in_the_model_config(tmp_path):
    config = TrainConfig(task="ner", train_file=write_conll(tmp_path / "t.txt", tagged_sentences(10)),
                         validation_file=write_conll(tmp_path / "v.txt", tagged_sentences(3, 1)))
    raw = TASK.load_raw_datasets(config)
    assert raw["train"].features["ner_tags"].feature.names == ["B-LOC", "B-PER", "O"]
    kwargs = TASK.model_config_kwargs(raw, config)
    assert kwargs["id2label"] == {0: "B-LOC", 1: "B-PER", 2: "O"} and kwargs["num_labels"] == 3
    assert kwargs["label2id"] == {"B-LOC": 0, "B-PER": 1, "O": 2}


def test_json_lines_with_string_tags(tmp_path):
    rows = [{"tokens": ["EU", "rejects", "Peter"], "ner_tags": ["B-ORG", "O", "B-PER"], "id": "7"}]
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    raw = TASK.load_raw_datasets(TrainConfig(task="ner", train_file=path, validation_file=path))
    assert raw["train"].features["ner_tags"].feature.names == ["B-ORG", "B-PER", "O"]
    assert raw["train"][0] == {"tokens": ["EU", "rejects", "Peter"], "ner_tags": [0, 2, 1]}


def test_integer_tags_without_names_become_their_own_names(tmp_path):
    path = write_jsonl(tmp_path / "train.json", [{"tokens": ["a", "b", "c"], "ner_tags": [0, 2, 10]}])
    raw = TASK.load_raw_datasets(TrainConfig(task="ner", train_file=path, validation_file=path))
    assert raw["train"].features["ner_tags"].feature.names == ["0", "2", "10"]
    assert raw["validation"][0]["ner_tags"] == [0, 1, 2]


def test_hub_dataset_tags_keep_their_class_label_names(tmp_path, monkeypatch):
    names = ["O", "B-PER", "I-PER"]  # not sorted: the dataset's own order must be kept
    features = datasets.Features({"id": datasets.Value("string"), "tokens": datasets.List(datasets.Value("string")),
                                  "ner_tags": datasets.List(datasets.ClassLabel(names=names))})
    hub = datasets.DatasetDict({split: datasets.Dataset.from_dict(
        {"id": ["0"], "tokens": [["Peter", "Blackburn", "spoke"]], "ner_tags": [[1, 2, 0]]}, features=features)
        for split in ("train", "validation")})
    monkeypatch.setattr("tf_finetune.tasks.token_classification.load_hub_dataset", lambda name, config: hub)
    raw = TASK.load_raw_datasets(TrainConfig(task="ner", dataset_name="conll2003"))
    assert raw["train"].features["ner_tags"].feature.names == names
    assert raw["validation"][0]["ner_tags"] == [1, 2, 0] and raw["train"].column_names == ["tokens", "ner_tags"]


def test_untagged_test_file_holds_tokens_only(tmp_path):
    test = tmp_path / "test.txt"
    test.write_text("EU\nrejects\n\nPeter\n")
    config = TrainConfig(task="ner", train_file=write_conll(tmp_path / "t.txt", tagged_sentences(4)),
                         validation_file=write_conll(tmp_path / "v.txt", tagged_sentences(2)), test_file=str(test))
    assert TASK.load_raw_datasets(config)["test"][:] == {"tokens": [["EU", "rejects"], ["Peter"]]}


# Tokenising and label alignment

def test_first_sub_token_carries_the_tag_and_the_rest_are_ignored(tiny_bert, tmp_path):
    sentence = [("zorro", "B-PER"), ("xyz", "I-PER"), ("sat", "O")]  # zorro and xyz are not in the vocabulary
    path = write_conll(tmp_path / "train.txt", [sentence])
    config = TrainConfig(task="ner", model_name_or_path=str(tiny_bert), train_file=path, validation_file=path)
    splits, tokenizer = tokenised(config)
    features = splits["train"].features[0]
    assert tokenizer.convert_ids_to_tokens(features["input_ids"]) == [
        "[CLS]", "z", "##o", "##r", "##r", "##o", "x", "##y", "##z", "sat", "[SEP]"]
    b_per, i_per, o = 0, 1, 2  # sorted: B-PER, I-PER, O
    assert features["labels"] == [-100, b_per, -100, -100, -100, -100, i_per, -100, -100, o, -100]
    assert features["word_ids"] == [-1, 0, 0, 0, 0, 0, 1, 1, 1, 2, -1]

    all_tokens = tokenised(config.replace(label_all_tokens=True))[0]["train"].features[0]
    assert all_tokens["labels"] == [-100, b_per, i_per, i_per, i_per, i_per, i_per, i_per, i_per, o, -100]


def test_label_all_tokens_keeps_b_when_the_data_has_no_i_tag(tiny_bert, tmp_path):
    path = write_conll(tmp_path / "train.txt", [[("zorro", "B-PER"), ("sat", "O")]])
    config = TrainConfig(task="ner", model_name_or_path=str(tiny_bert), train_file=path, validation_file=path,
                         label_all_tokens=True)
    assert tokenised(config)[0]["train"].features[0]["labels"] == [-100, 0, 0, 0, 0, 0, 1, -100]


def test_long_sentences_are_truncated_to_max_seq_length(tiny_bert, tmp_path):
    path = write_conll(tmp_path / "train.txt", [[("the", "O")] * 20])
    config = TrainConfig(task="ner", model_name_or_path=str(tiny_bert), train_file=path, validation_file=path,
                         max_seq_length=8)
    assert len(tokenised(config)[0]["train"].features[0]["input_ids"]) == 8


def test_byte_level_tokenizer_without_prefix_space_is_refused(tiny_gpt2):
    with pytest.raises(UserError, match="add_prefix_space=True"):
        check_tokenizer(load_tokenizer(str(tiny_gpt2)), "gpt2")


# Scores

REFERENCES = [["B-PER", "I-PER", "O", "B-LOC", "O"], ["O", "B-ORG", "I-ORG", "I-ORG", "O", "B-PER"]]
PREDICTIONS = [["B-PER", "I-PER", "O", "B-ORG", "O"],  # LOC found with the wrong type
               ["O", "B-ORG", "I-ORG", "O", "O", "B-PER"]]  # ORG with the wrong boundary (one word short)


def test_seqeval_metric_equals_seqeval_itself():
    scores = compute_metrics(load_metric("seqeval"), PREDICTIONS, REFERENCES)
    assert scores["overall_precision"] == pytest.approx(precision_score(REFERENCES, PREDICTIONS)) == 0.5
    assert scores["overall_recall"] == pytest.approx(recall_score(REFERENCES, PREDICTIONS)) == 0.5
    assert scores["overall_f1"] == pytest.approx(f1_score(REFERENCES, PREDICTIONS)) == 0.5
    assert scores["overall_accuracy"] == pytest.approx(accuracy_score(REFERENCES, PREDICTIONS)) == 9 / 11
    report = classification_report(REFERENCES, PREDICTIONS, output_dict=True)
    for kind in ("PER", "LOC", "ORG"):
        assert scores[f"{kind}_f1"] == pytest.approx(report[kind]["f1-score"])
        assert scores[f"{kind}_number"] == report[kind]["support"]
    assert scores["PER_f1"] == 1.0 and scores["ORG_precision"] == scores["LOC_recall"] == 0.0


def test_seqeval_metric_passes_on_strict_mode_schemes_and_suffixes():
    from seqeval.scheme import IOB2

    metric = load_metric("seqeval")
    references, predictions = [["B-PER", "I-PER", "O"]], [["I-PER", "I-PER", "O"]]  # no B-: lenient only
    assert compute_metrics(metric, predictions, references)["overall_f1"] == 1.0
    strict = compute_metrics(metric, predictions, references, mode="strict", scheme="IOB2", zero_division=0)
    assert strict["overall_f1"] == f1_score(references, predictions, mode="strict", scheme=IOB2, zero_division=0) == 0
    suffixed = compute_metrics(metric, [["PER-B", "PER-I", "O"]], [["PER-B", "O", "O"]], suffix=True)
    assert suffixed["PER_number"] == 1 and suffixed["overall_precision"] == 0.0
    with pytest.raises(ValueError, match="scheme should be one of"):
        metric.compute(predictions=predictions, references=references, scheme="IOB9")


def test_evaluation_scores_the_word_tags_as_seqeval_does(tiny_bert, tmp_path):
    config = ner_config(tiny_bert, tmp_path, per_device_eval_batch_size=7, label_all_tokens=True,
                        validation_file=write_conll(tmp_path / "hand_made.txt", [
                            [("zorro", "B-PER"), ("sat", "O")], *tagged_sentences(30, 1)]))
    run = FineTuneRun(config)
    run.compile()
    run.model.fit(run.train_dataset, epochs=1, verbose=0)  # partly trained, so predictions are right and wrong
    results = run.evaluate()

    names = run.model.config.id2label
    predictions, references, losses = [], [], []
    for row in run.splits["validation"].features:  # one unpadded row at a time, no collator
        logits = run.model({"input_ids": tf.constant([row["input_ids"]])}, training=False).logits[0]
        labels = np.array(row["labels"])
        kept = labels != -100
        predictions.append([names[int(i)] for i in np.argmax(logits, -1)[kept]])
        references.append([names[int(i)] for i in labels[kept]])
        losses.append(float(run.model.hf_compute_loss(tf.constant(labels[None]), logits[None])[0]) * kept.sum())
    hand_made = run.splits["validation"].examples["tokens"].index(["zorro", "sat"])  # evaluation sorts by length
    assert len(references[hand_made]) == 6  # label_all_tokens: every sub-token of zorro is scored (z ##o ##r ##r ##o)
    assert 0 < f1_score(references, predictions) < 1
    assert results["eval_f1"] == pytest.approx(f1_score(references, predictions))
    assert results["eval_precision"] == pytest.approx(precision_score(references, predictions))
    assert results["eval_recall"] == pytest.approx(recall_score(references, predictions))
    assert results["eval_accuracy"] == pytest.approx(accuracy_score(references, predictions))
    assert results["eval_loss"] == pytest.approx(sum(losses) / sum(map(len, references)), rel=1e-4)


def test_entity_level_metrics_add_per_type_keys(tiny_bert, tmp_path):
    config = ner_config(tiny_bert, tmp_path)
    declared = TASK.result_keys(config, None)
    assert declared == ["eval_loss", "eval_precision", "eval_recall", "eval_f1", "eval_accuracy"]
    plain = FineTuneRun(config).evaluate()
    assert set(plain) == set(declared)
    detailed = FineTuneRun(config.replace(return_entity_level_metrics=True)).evaluate()
    per_type = {f"eval_{kind}_{score}" for kind in ("PER", "LOC") for score in ("precision", "recall", "f1", "number")}
    assert set(detailed) == set(declared) | per_type
    assert detailed["eval_PER_number"] == 30  # one person per validation sentence


def test_tiny_model_learns_to_tag_people_and_places(tiny_bert, tmp_path):
    run = FineTuneRun(ner_config(tiny_bert, tmp_path, num_train_epochs=3,
                                 train_file=write_conll(tmp_path / "big.txt", tagged_sentences(200, 0))))
    before = run.evaluate()["eval_f1"]
    run.compile()
    run.model.fit(run.train_dataset, epochs=3, verbose=0)
    after = run.evaluate()["eval_f1"]
    assert after > 0.9 and after - before > 0.4, (before, after)


# Predictions

@pytest.fixture(scope="module")
def trained_ner(tiny_bert, tmp_path_factory):
    """A tiny model trained (max_seq_length 8) with predictions for an untagged test file whose second sentence is
    longer than max_seq_length."""
    tmp_path = tmp_path_factory.mktemp("ner")
    test = tmp_path / "test.txt"
    test.write_text("the\nking\nsat\n\n" + "".join(f"{word}\n" for word in ["queen"] * 10) + "\nzorro\ncity\n")
    config = ner_config(tiny_bert, tmp_path, train_file=write_conll(tmp_path / "big.txt", tagged_sentences(200, 0)),
                        num_train_epochs=4, max_seq_length=8, test_file=str(test), do_predict=True)
    return train(config), tmp_path / "out"


def test_predictions_file_is_conll_with_one_tag_per_word(trained_ner):
    results, out = trained_ner
    assert results["eval_f1"] > 0.9
    blocks = (out / "predict_results_ner.txt").read_text().split("\n\n")
    sentences = [[line.split(" ") for line in block.splitlines()] for block in blocks]
    assert [[token for token, _ in sentence] for sentence in sentences] == [
        ["the", "king", "sat"], ["queen"] * 10, ["zorro", "city"]]
    assert sentences[0] == [["the", "O"], ["king", "B-PER"], ["sat", "O"]]
    # max_seq_length 8 leaves room for 6 words: the queens beyond are not seen and get O
    assert [tag for _, tag in sentences[1]] == ["B-PER"] * 6 + ["O"] * 4
    assert sentences[2][1] == ["city", "B-LOC"]


def test_predict_command_prints_word_tags_then_entities(trained_ner, capsys):
    _, out = trained_ner
    assert predict_main(["--model", str(out), "the king sat in the city", "a dog ran"]) == 0
    lines = capsys.readouterr().out.splitlines()
    words = [line.split("\t") for line in lines[:6]]
    assert [(word, tag) for word, tag, _ in words] == [("the", "O"), ("king", "B-PER"), ("sat", "O"), ("in", "O"),
                                                      ("the", "O"), ("city", "B-LOC")]
    assert all(0.5 < float(score) <= 1.0 for _, _, score in words)
    assert lines[6:10] == ["entities:", "PER\tking", "LOC\tcity", ""]
    assert [line.split("\t")[:2] for line in lines[10:13]] == [["a", "O"], ["dog", "O"], ["ran", "O"]]
    assert lines[13:] == ["entities: none"]


# Bad input: one line, exit code 2, before anything is trained or written

def _bad_files(tmp_path) -> dict[str, str]:
    def text(name: str, content: str) -> str:
        (tmp_path / name).write_text(content)
        return str(tmp_path / name)

    return {
        "ragged": text("ragged.txt", "the NN O\nking NN B-PER\nsat O\n"),
        "one_column": text("one_column.txt", "the\nking\n"),
        "unknown_tag": write_conll(tmp_path / "unknown.txt", [[("the", "O")], [("king", "B-ORG"), ("sat", "O")]]),
        "empty": text("empty.txt", "-DOCSTART- -X- -X- O\n\n\n"),
        "no_tags_json": write_jsonl(tmp_path / "words.jsonl", [{"words": ["a"], "tags": ["O"]}]),
        "lengths": write_jsonl(tmp_path / "lengths.jsonl", [{"tokens": ["a"], "ner_tags": ["O"]},
                                                           {"tokens": ["the", "king", "sat"], "ner_tags": ["O", "B"]}]),
        "empty_json": text("empty.jsonl", ""),
    }


BAD_INPUT = {
    "line with another number of columns": (["--train_file", "{ragged}"],
                                            "train file {ragged} line 3 has 2 column(s) where the lines before have 3"),
    "tag column beyond the line": (["--label_column_index", "3"],
                                   "train file {train} line 3 has 3 column(s), but the tag column "
                                   "--label_column_index 3 needs at least 4"),
    "token column as tag column": (["--label_column_index", "0"], "--label_column_index 0 is the token column"),
    "no tag column": (["--train_file", "{one_column}"], "train file {one_column} line 1 has only one column"),
    "unknown validation tag": (["--validation_file", "{unknown_tag}"],
                               "validation file {unknown_tag} example 1 (counting from 0) has the tag 'B-ORG', which "
                               "the training data does not have (known tags: B-LOC, B-PER, O)"),
    "empty file": (["--validation_file", "{empty}"], "validation file {empty} holds no examples"),
    "empty json file": (["--validation_file", "{empty_json}"], "holds no examples"),
    "json without tokens and tags": (["--train_file", "{no_tags_json}"],
                                     "has no 'tokens' (the words) and 'ner_tags' (one tag per word) columns "
                                     "(columns: words, tags)"),
    "tokens and tags of different lengths": (["--validation_file", "{lengths}"],
                                             "example 1 (counting from 0) has 3 tokens but 2 ner_tags"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_fails_before_training_with_one_line(case, tiny_bert, tmp_path, capsys):
    files = {**_bad_files(tmp_path), "train": write_conll(tmp_path / "train.txt", tagged_sentences(8))}
    overrides, expected = BAD_INPUT[case]
    args = {"--task": "ner", "--model_name_or_path": str(tiny_bert), "--train_file": files["train"],
            "--validation_file": write_conll(tmp_path / "valid.txt", tagged_sentences(4, 1)),
            "--output_dir": str(tmp_path / "out"), **dict(zip(overrides[::2], overrides[1::2]))}
    code = train_main([item.format(**files) for pair in args.items() for item in pair])
    err = command_error(capsys.readouterr().err)
    assert code == 2
    assert err.startswith("error: ") and expected.format(**files) in err, err
    assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out")


# The real thing

@pytest.mark.slow
def test_minilm_learns_conll2003_entities_through_the_command_line(minilm_path, shared_data, tmp_path):
    conll = shared_data / "ner" / "conll2003"
    out = tmp_path / "ner"
    command = [sys.executable, "-m", "tf_finetune.train", "--task", "ner", "--model_name_or_path", str(minilm_path),
               "--train_file", str(conll / "train.txt"), "--validation_file", str(conll / "valid.txt"),
               "--test_file", str(conll / "test.txt"), "--do_predict", "--max_train_samples", "300",
               "--max_eval_samples", "200", "--max_predict_samples", "5", "--num_train_epochs", "1",
               "--learning_rate", "3e-4", "--per_device_train_batch_size", "16", "--output_dir", str(out),
               "--verbose", "2"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((out / "all_results.json").read_text())
    assert results["eval_samples"] == 200 and results["eval_f1"] > 0.05, results  # predicting all O scores 0
    predicted = (out / "predict_results_ner.txt").read_text().split("\n\n")
    assert len(predicted) == 5 and predicted[0].splitlines()[0].split(" ")[0] == "SOCCER"

    model = TFAutoModelForTokenClassification.from_pretrained(out)
    assert set(model.config.id2label.values()) == {"O", *(f"{p}-{t}" for p in "BI" for t in
                                                          ("PER", "ORG", "LOC", "MISC"))}
    tokenizer = AutoTokenizer.from_pretrained(out)
    encoded = tokenizer(["EU", "rejects", "German", "call"], is_split_into_words=True, return_tensors="tf")
    assert model(encoded).logits.shape == (1, encoded["input_ids"].shape[1], 9)
    answer = subprocess.run([sys.executable, "-m", "tf_finetune.predict", "--model", str(out),
                             "EU rejects German call"], capture_output=True, text=True, timeout=300)
    assert answer.returncode == 0, answer.stderr[-3000:]
    assert answer.stdout.splitlines()[0].startswith("EU\t") and "entities:" in answer.stdout
