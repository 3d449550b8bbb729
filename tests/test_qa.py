"""Extractive question answering: reading SQuAD files, windows, the SQuAD metrics, post-processing, learning,
predictions, bad input and the predict command."""
from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from types import SimpleNamespace

import datasets
import numpy as np
import pytest
from transformers import AutoTokenizer, TFAutoModelForQuestionAnswering

from task_fixtures.question_answering import FILLER, QUESTION, cue_rows, squad_json, write_jsonl, write_squad
from tf_finetune.config import TrainConfig
from tf_finetune.core.errors import UserError
from tf_finetune.metrics import load_metric
from tf_finetune.predict import main as predict_main
from tf_finetune.tasks import get_task
from tf_finetune.tasks.qa_files import read_qa_file
from tf_finetune.tasks.question_answering import best_answers, encode_windows, window_logits
from tf_finetune.training import FineTuneRun, train

TASK = get_task("qa")


def qa_config(tiny_bert, tmp_path, **overrides) -> TrainConfig:
    values = dict(task="qa", model_name_or_path=str(tiny_bert), output_dir=str(tmp_path / "out"), max_seq_length=64,
                  doc_stride=16, num_train_epochs=1, per_device_train_batch_size=8, verbose=0)
    return TrainConfig(**{**values, **overrides})


def files(tmp_path, train_rows, valid_rows=None) -> dict[str, str]:
    return {"train_file": write_squad(tmp_path / "train.json", train_rows),
            "validation_file": write_squad(tmp_path / "valid.json", valid_rows or cue_rows(4, 9))}


def tokenized(config: TrainConfig):
    tokenizer = AutoTokenizer.from_pretrained(config.model_name_or_path)
    return TASK.tokenize(TASK.load_raw_datasets(config), tokenizer, config), tokenizer


# Reading

def test_squad_json_is_flattened_to_one_row_per_question(tmp_path):
    rows = cue_rows(5, 0)
    dataset = read_qa_file(write_squad(tmp_path / "train.json", rows), "train")
    assert dataset.column_names == ["id", "title", "context", "question", "answers"]
    assert sorted(dataset.to_list(), key=lambda row: row["id"]) == sorted(rows, key=lambda row: row["id"])


def test_reading_and_tokenising_are_cached_and_a_changed_file_is_read_again(tmp_path, tiny_bert):
    config = qa_config(tiny_bert, tmp_path, **files(tmp_path, cue_rows(12, 0)))
    first = tokenized(config)[0]["train"].features.cache_files[0]["filename"]
    assert tokenized(config)[0]["train"].features.cache_files[0]["filename"] == first  # reused, not tokenised again
    write_squad(tmp_path / "train.json", cue_rows(6, 3))
    changed = tokenized(config)[0]["train"]
    assert len(changed) == 6 and changed.features.cache_files[0]["filename"] != first


@pytest.mark.parametrize("layout", ["jsonl", "json list", "jsonl named .json", "json data list"])
def test_flat_json_lines_and_lists_read_as_squad_rows(tmp_path, tiny_bert, layout):
    rows = [{key: value for key, value in row.items() if key != "title"} for row in cue_rows(5, 0)]
    path = tmp_path / ("train.jsonl" if layout == "jsonl" else "train.json")
    if layout == "json list":
        path.write_text(json.dumps(rows))
    elif layout == "json data list":
        path.write_text(json.dumps({"version": "0.1.0", "data": rows}))
    else:
        write_jsonl(path, rows)
    config = qa_config(tiny_bert, tmp_path, train_file=str(path), do_eval=False)
    train_split = TASK.load_raw_datasets(config)["train"]
    assert train_split.to_list() == [{**row, "title": ""} for row in rows]


def test_v2_impossible_question_has_no_answers(tmp_path, tiny_bert):
    rows = cue_rows(3, 0)
    data = squad_json(rows)
    impossible = data["data"][0]["paragraphs"][0]["qas"][0]
    impossible.update(is_impossible=True, plausible_answers=impossible["answers"])
    (tmp_path / "train.json").write_text(json.dumps(data))
    config = qa_config(tiny_bert, tmp_path, train_file=str(tmp_path / "train.json"), do_eval=False)
    with pytest.raises(UserError, match=rf"1 question\(s\) without an answer \(first: id '{rows[0]['id']}'\).*"
                                        "--version_2_with_negative"):
        TASK.load_raw_datasets(config)
    config = config.replace(version_2_with_negative=True)
    raw = TASK.load_raw_datasets(config)
    assert raw["train"][0]["answers"] == {"text": [], "answer_start": []}
    assert raw["train"][1]["answers"] == rows[1]["answers"]
    features = TASK.tokenize(raw, AutoTokenizer.from_pretrained(tiny_bert), config)["train"].features
    assert features[0]["start_positions"] == features[0]["end_positions"] == 0  # trained to point at CLS
    assert features[1]["start_positions"] > 0


# Windows

def test_answer_in_a_later_window_gets_positions_that_map_back_to_its_text(tiny_bert, tmp_path):
    row = cue_rows(1, 3)[0]
    words = [FILLER[i % len(FILLER)] for i in range(80)]
    row["context"] = " ".join(words[:60]) + " king dog " + " ".join(words[60:])  # the answer lies past window 2
    row["answers"] = {"text": ["dog"], "answer_start": [row["context"].index("king dog") + 5]}
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    batch = {key: [value] for key, value in row.items()}
    train_windows = encode_windows(batch, tokenizer, max_seq_length=40, doc_stride=8, training=True)
    eval_windows = encode_windows(batch, tokenizer, max_seq_length=40, doc_stride=8, training=False)
    starts, ends = train_windows["start_positions"], train_windows["end_positions"]
    assert len(starts) >= 3
    assert starts[0] == ends[0] == 0  # the first window does not hold the answer: CLS
    holding = [i for i, start in enumerate(starts) if start != 0]
    assert holding and holding[0] > 0
    for i in holding:
        offsets = eval_windows["offset_mapping"][i]
        assert row["context"][offsets[starts[i]][0]:offsets[ends[i]][1]] == "dog"
    assert eval_windows["example_id"] == [row["id"]] * len(starts)
    question_tokens = len(tokenizer(QUESTION, add_special_tokens=False)["input_ids"])
    assert all(offset is None for offset in eval_windows["offset_mapping"][0][:question_tokens + 2])
    # consecutive windows share doc_stride tokens of the context
    first, second = (ids[question_tokens + 2:-1] for ids in train_windows["input_ids"][:2])
    assert first[-8:] == second[:8]


def test_left_padding_tokenizers_put_the_context_first(tiny_bert):
    row = cue_rows(1, 4, length=60)[0]
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert, padding_side="left")
    batch = {key: [value] for key, value in row.items()}
    train_windows = encode_windows(batch, tokenizer, max_seq_length=40, doc_stride=8, training=True)
    eval_windows = encode_windows(batch, tokenizer, max_seq_length=40, doc_stride=8, training=False)
    question_ids = tokenizer(QUESTION, add_special_tokens=False)["input_ids"]
    assert all(ids[-len(question_ids) - 1:-1] == question_ids for ids in train_windows["input_ids"])
    holding = [i for i, start in enumerate(train_windows["start_positions"]) if start != 0]
    assert holding
    for i in holding:
        offsets = eval_windows["offset_mapping"][i]
        start, end = train_windows["start_positions"][i], train_windows["end_positions"][i]
        assert row["context"][offsets[start][0]:offsets[end][1]] == row["answers"]["text"][0]


def test_window_logits_keep_each_window_s_own_tokens_whichever_side_is_padded():
    class Model:
        def predict_on_batch(self, features):
            logits = np.arange(features["input_ids"].size, dtype=np.float32).reshape(features["input_ids"].shape)
            return SimpleNamespace(start_logits=logits, end_logits=-logits)

    batches = [{"input_ids": np.zeros((2, 4)), "attention_mask": np.array([[1, 1, 1, 1], [1, 1, 0, 0]])},
               ({"input_ids": np.zeros((1, 3)), "attention_mask": np.array([[0, 1, 1]])}, np.zeros(1))]
    starts, ends = window_logits(Model(), batches)
    assert [list(start) for start in starts] == [[0, 1, 2, 3], [4, 5], [1, 2]]
    assert [list(end) for end in ends] == [[0, -1, -2, -3], [-4, -5], [-1, -2]]


def test_max_samples_count_questions_before_windowing(tiny_bert, tmp_path):
    config = qa_config(tiny_bert, tmp_path, **files(tmp_path, cue_rows(12, 0, long_every=2)), max_train_samples=5)
    splits, _ = tokenized(config)
    assert len(splits["train"].examples) == 5
    assert len(splits["train"].features) > 5  # long contexts make several windows
    assert set(splits["validation"].features.column_names) == {"input_ids", "token_type_ids", "attention_mask",
                                                               "example_id", "offset_mapping"}


# Metrics

def squad_scores(name, predictions, golds, **extra):
    predictions = [{"id": str(i), "prediction_text": text, **extra} for i, text in enumerate(predictions)]
    references = [{"id": str(i), "answers": {"text": gold, "answer_start": [0] * len(gold)}}
                  for i, gold in enumerate(golds)]
    return load_metric(name).compute(predictions=predictions, references=references)


@pytest.mark.parametrize("prediction, gold, exact, f1", [
    ("The Cat!", ["cat"], 1, 1.0),  # case, punctuation and articles do not count
    ("an  apple,  a pear", ["apple pear"], 1, 1.0),
    ("the big red dog", ["red dog"], 0, 2 * (2 / 3) * 1 / (2 / 3 + 1)),  # 2 shared of 3 predicted, 2 gold tokens
    ("red dog", ["blue cat", "dog"], 0, 2 * 0.5 * 1 / 1.5),  # the best gold answer counts
    ("Denver Broncos", ["Broncos", "denver broncos."], 1, 1.0),
    ("blue", ["red"], 0, 0.0),
])
def test_squad_metric_matches_hand_computed_official_values(prediction, gold, exact, f1):
    assert squad_scores("squad", [prediction], [gold]) == {"exact_match": pytest.approx(100.0 * exact),
                                                           "f1": pytest.approx(100.0 * f1)}


def test_squad_metric_averages_over_questions():
    scores = squad_scores("squad", ["cat", "the big red dog", "blue"], [["cat"], ["red dog"], ["red"]])
    assert scores["exact_match"] == pytest.approx(100 / 3)
    assert scores["f1"] == pytest.approx(100 * (1 + 0.8) / 3)


def test_squad_v2_metric_splits_answerable_and_unanswerable_questions():
    scores = squad_scores("squad_v2", ["cat", "the big red dog", "", "dog"], [["cat"], ["red dog"], [], []],
                          no_answer_probability=0.0)
    assert scores["exact"] == pytest.approx(100 * 2 / 4)
    assert scores["f1"] == pytest.approx(100 * (1 + 0.8 + 1 + 0) / 4)
    assert scores["HasAns_exact"] == pytest.approx(50.0) and scores["HasAns_f1"] == pytest.approx(90.0)
    assert scores["NoAns_exact"] == pytest.approx(50.0) and scores["NoAns_f1"] == pytest.approx(50.0)
    assert (scores["total"], scores["HasAns_total"], scores["NoAns_total"]) == (4, 2, 2)
    # all no-answer probabilities are 0, so the best threshold (0) counts questions in order until the score is
    # highest: 2 unanswerable + 1 + 0.8 (f1) or + 1 + 0 (exact), before question 3's wrong answer costs 1
    assert (scores["best_f1"], scores["best_f1_thresh"]) == (pytest.approx(95.0), 0.0)
    assert (scores["best_exact"], scores["best_exact_thresh"]) == (pytest.approx(75.0), 0.0)


# Post-processing

def windows_of_q(offsets: list[list[tuple[int, int] | None]]) -> datasets.Dataset:
    """Evaluation windows of the question with id "q" (offset None outside the context)."""
    return datasets.Dataset.from_dict({"example_id": ["q"] * len(offsets), "offset_mapping": offsets})


def test_post_processing_picks_the_best_span_over_windows_within_max_answer_length(tiny_bert, tmp_path):
    context = "aa bb cc dd ee"
    examples = datasets.Dataset.from_dict({"id": ["q"], "context": [context]})
    # window 0 covers "aa bb cc", window 1 "cc dd ee"; position 0 is CLS (no offsets)
    features = windows_of_q([[None, (0, 2), (3, 5), (6, 8)], [None, (6, 8), (9, 11), (12, 14)]])
    starts = [np.array([0.0, 2.0, -20.0, -20.0]), np.array([0.0, 0.0, 3.0, 0.0])]
    ends = [np.array([0.0, 0.0, 2.0, 0.0]), np.array([9.0, 0.0, 0.0, 4.0])]
    config = qa_config(tiny_bert, tmp_path)
    # window 1's "dd ee" (3 + 4) beats window 0's "aa bb" (2 + 2); the CLS end logit 9 is no span
    assert best_answers(examples, features, starts, ends, config) == ["dd ee"]
    ends[1][3] = -5.0  # window 1's best is now "dd" (3 + 0)
    assert best_answers(examples, features, starts, ends, config) == ["aa bb"]
    ends[0][3] = 10.0  # "aa bb cc" (2 + 10) is 3 tokens
    assert best_answers(examples, features, starts, ends, config) == ["aa bb cc"]
    assert best_answers(examples, features, starts, ends, config.replace(max_answer_length=2)) == ["aa bb"]


def test_v2_predicts_no_answer_when_the_null_score_wins_by_more_than_the_threshold(tiny_bert, tmp_path):
    examples = datasets.Dataset.from_dict({"id": ["q"], "context": ["aa bb"]})
    features = windows_of_q([[None, (0, 2), (3, 5)]])
    starts, ends = [np.array([4.0, 1.0, 0.0])], [np.array([4.0, 0.0, 2.0])]  # null 8, best span "aa bb" 3
    config = qa_config(tiny_bert, tmp_path, version_2_with_negative=True)
    assert best_answers(examples, features, starts, ends, config) == [""]
    assert best_answers(examples, features, starts, ends, config.replace(null_score_diff_threshold=5.5)) == ["aa bb"]
    assert best_answers(examples, features, starts, ends, config.replace(version_2_with_negative=False)) == ["aa bb"]


# Training, evaluation and predictions

def test_tiny_model_learns_the_word_after_the_cue(tiny_bert, tmp_path):
    config = qa_config(tiny_bert, tmp_path, **files(tmp_path, cue_rows(160, 0, long_every=8), cue_rows(40, 1)),
                       learning_rate=5e-3, num_train_epochs=6, per_device_train_batch_size=16)
    run = FineTuneRun(config)
    before = run.evaluate()
    run.compile()
    run.model.fit(run.train_dataset, epochs=config.num_train_epochs, verbose=0)
    after = run.evaluate()
    assert set(after) == {"eval_exact_match", "eval_f1"}
    assert after["eval_f1"] > 80 and after["eval_f1"] > before["eval_f1"] + 50


def test_predictions_json_is_keyed_by_question_id(qa_model, tmp_path):
    test_rows = cue_rows(6, 2, long_every=2)
    config = qa_config(qa_model, tmp_path, **files(tmp_path, cue_rows(16, 0)), do_predict=True,
                       test_file=write_jsonl(tmp_path / "test.jsonl", test_rows), max_predict_samples=5)
    train(config)
    predictions = json.loads((tmp_path / "out" / "predict_results_qa.json").read_text())
    assert predictions == {row["id"]: row["answers"]["text"][0] for row in test_rows[:5]}  # the words after the cue


def test_v2_run_reports_squad_v2_scores(tiny_bert, tmp_path):
    valid = cue_rows(6, 1)
    for row in valid[:2]:
        row["answers"] = {"text": [], "answer_start": []}
    config = qa_config(tiny_bert, tmp_path, **files(tmp_path, cue_rows(16, 0), valid), version_2_with_negative=True)
    results = train(config)
    assert {"eval_exact", "eval_f1", "eval_HasAns_f1", "eval_NoAns_f1", "eval_best_f1"} <= set(results)
    assert results["eval_NoAns_total"] == 2 and results["eval_HasAns_total"] == 4


# Bad input

def test_doc_stride_must_leave_room_in_each_window(tiny_bert, tmp_path):
    config = qa_config(tiny_bert, tmp_path, **files(tmp_path, cue_rows(4, 0)), max_seq_length=20, doc_stride=12)
    # "who is the king ?" is 5 tokens, plus 3 special tokens: 12 context tokens per window of 20
    with pytest.raises(UserError, match=r"--doc_stride 12 must be smaller than the 12 context tokens .*"
                                        r"--max_seq_length 384 --doc_stride 128"):
        tokenized(config)
    assert len(tokenized(config.replace(doc_stride=11))[0]["train"].features) > 4


def test_a_question_longer_than_max_seq_length_is_named(tiny_bert, tmp_path):
    rows = cue_rows(4, 0)
    rows[2]["question"] = " ".join(["who"] * 70)
    config = qa_config(tiny_bert, tmp_path, **files(tmp_path, rows))
    with pytest.raises(UserError, match=rf"train question '{rows[2]['id']}' has 70 tokens.*shorten the question or "
                                        r"pass --max_seq_length 90 or more"):
        tokenized(config)


def test_bad_answer_starts_are_counted_and_named(tiny_bert, tmp_path):
    rows = cue_rows(10, 0)
    for row in (rows[3], rows[7]):
        row["answers"]["answer_start"][0] += 1
    config = qa_config(tiny_bert, tmp_path, **files(tmp_path, rows))
    with pytest.raises(UserError, match=rf"train file .* has 2 answer\(s\) that are not at their answer_start .*"
                                        rf"first: question id '{rows[3]['id']}'.*--skip_bad_answers"):
        TASK.load_raw_datasets(config)


def test_skip_bad_answers_drops_and_counts_them(tiny_bert, tmp_path, caplog):
    rows = cue_rows(10, 0)
    for row in (rows[3], rows[7]):
        row["answers"]["answer_start"][0] += 1
    config = qa_config(tiny_bert, tmp_path, **files(tmp_path, rows), skip_bad_answers=True)
    with caplog.at_level(logging.WARNING):
        train_split = TASK.load_raw_datasets(config)["train"]
    assert sorted(train_split["id"]) == sorted(row["id"] for i, row in enumerate(rows) if i not in (3, 7))
    assert "dropped 2 of 10 questions" in caplog.text


@pytest.mark.parametrize("content, message", [
    ({"data": [{"title": "t", "paragraphs": [{"qas": []}]}]}, r"data\[0\].paragraphs\[0\] has no 'context' string"),
    ({"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "x", "answers": []}]}]}]},
     r"data\[0\].paragraphs\[0\].qas\[0\] has no 'question' string"),
    ({"version": "1.1"}, "JSON object without a 'data' list"),
    ({"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "x", "question": "q",
                                                        "answers": [{"text": "c", "answer_start": "0"}]}]}]}]},
     r"qas\[0\] has answers that are not a list of \{\"text\": string, \"answer_start\": integer\} objects"),
    ([{"id": "x", "question": "q", "answers": {"text": ["c"], "answer_start": [0]}}], "no .context. field"),
    ([{"id": "x", "question": "q", "context": "c", "answers": [{"text": "c", "answer_start": 0}]}],
     r"answers as \{text: \[...\], answer_start: \[...\]\}"),
])
def test_malformed_files_are_reported_in_one_line(tiny_bert, tmp_path, content, message):
    (tmp_path / "train.json").write_text(json.dumps(content))
    config = qa_config(tiny_bert, tmp_path, train_file=str(tmp_path / "train.json"), do_eval=False)
    with pytest.raises(UserError, match=message) as error:
        TASK.load_raw_datasets(config)
    assert "\n" not in str(error.value)


def test_duplicate_question_ids_are_an_error(tiny_bert, tmp_path):
    rows = cue_rows(3, 0)
    rows[2]["id"] = rows[0]["id"]
    config = qa_config(tiny_bert, tmp_path, **files(tmp_path, rows))
    with pytest.raises(UserError, match=rf"question id '{rows[0]['id']}' more than once"):
        TASK.load_raw_datasets(config)


# The predict command

@pytest.fixture(scope="module")
def qa_model(tiny_bert, tmp_path_factory):
    """A tiny model trained (as in test_tiny_model_learns_the_word_after_the_cue) to answer QUESTION with the word
    after the cue."""
    directory = tmp_path_factory.mktemp("qa-model")
    config = qa_config(tiny_bert, directory, **files(directory, cue_rows(160, 0, long_every=8)),
                       learning_rate=5e-3, num_train_epochs=6, per_device_train_batch_size=16)
    run = FineTuneRun(config)
    run.compile()
    run.model.fit(run.train_dataset, epochs=config.num_train_epochs, verbose=0)
    run.save()
    return directory / "out"


def test_predict_command_answers_questions_from_flags_and_a_file(qa_model, tmp_path, capsys):
    questions = tmp_path / "questions.jsonl"
    questions.write_text(json.dumps({"question": QUESTION, "context": "the sun was red and the king dog ran fast"})
                         + "\n\n")
    assert predict_main(["--model", str(qa_model), "--question", QUESTION, "--context", "the king cat sat",
                         "--file", str(questions)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    answer, score, question = lines[0].split("\t")
    assert answer == "cat" and float(score) > 0.5 and question == QUESTION
    assert lines[1].split("\t")[0] == "dog"


def test_predict_command_answers_with_the_training_runs_window_settings(qa_model, tmp_path, monkeypatch, capsys):
    import tf_finetune.tasks.question_answering as question_answering

    calls = []

    def fake_pipeline(tag, model, tokenizer):
        def answer(**kwargs):
            calls.append(kwargs)
            return {"answer": "cat", "score": 0.5}
        return answer

    monkeypatch.setattr(question_answering, "text_pipeline", fake_pipeline)
    model_dir = tmp_path / "model"
    shutil.copytree(qa_model, model_dir)
    run_config = qa_config(qa_model, tmp_path, max_seq_length=64, doc_stride=16, max_answer_length=5,
                           version_2_with_negative=True)
    (model_dir / "run_config.json").write_text(json.dumps(run_config.to_dict()))
    assert predict_main(["--model", str(model_dir), "--question", QUESTION, "--context", "the king cat sat"]) == 0
    assert calls[0] == {"question": QUESTION, "context": "the king cat sat", "max_seq_len": 64, "doc_stride": 16,
                        "max_answer_len": 5, "handle_impossible_answer": True}
    assert capsys.readouterr().out.startswith("cat\t0.5000\t")


@pytest.mark.parametrize("args, message", [
    (["--question", QUESTION], "needs both --question and --context"),
    (["--context", "the cat"], "needs both --question and --context"),
    ([], "no question: pass --question"),
    (["who is it"], "not TEXT arguments"),
])
def test_predict_command_needs_a_question_and_a_context(qa_model, capsys, args, message):
    assert predict_main(["--model", str(qa_model), *args]) == 2
    assert message in capsys.readouterr().err


def test_predict_command_names_a_bad_line_of_the_file(qa_model, tmp_path, capsys):
    questions = tmp_path / "questions.jsonl"
    questions.write_text(json.dumps({"question": "who ?", "context": "the dog"}) + "\n" + '{"question": "who"}\n')
    assert predict_main(["--model", str(qa_model), "--file", str(questions)]) == 2
    assert f"{questions} line 2 needs non-blank \"question\" and \"context\"" in capsys.readouterr().err


# End to end with the real MiniLM

def split_article(source, train_path, eval_path, train_paragraphs: int) -> None:
    """The first paragraphs of a SQuAD file's first article for training, its other paragraphs for evaluation."""
    article = json.loads(source.read_text())["data"][0]
    for path, paragraphs in ((train_path, article["paragraphs"][:train_paragraphs]),
                             (eval_path, article["paragraphs"][train_paragraphs:])):
        path.write_text(json.dumps({"data": [{"title": article["title"], "paragraphs": paragraphs}]}))


def train_command(minilm_path, out, *flags: str) -> list[str]:
    return [sys.executable, "-m", "tf_finetune.train", "--task", "qa", "--model_name_or_path", str(minilm_path),
            "--max_seq_length", "256", "--doc_stride", "96", "--output_dir", str(out), "--verbose", "0", *flags]


@pytest.mark.slow
def test_minilm_squad_end_to_end(minilm_path, shared_data, tmp_path):
    train_file, eval_file = tmp_path / "train.json", tmp_path / "eval.json"
    split_article(shared_data / "qa" / "squad" / "dev-v1.1.json", train_file, eval_file, train_paragraphs=12)
    evaluation = ["--validation_file", str(eval_file), "--max_eval_samples", "100"]
    subprocess.run(train_command(minilm_path, tmp_path / "untrained", "--do_train", "false", *evaluation),
                   check=True, capture_output=True, text=True)
    out = tmp_path / "out"
    subprocess.run(train_command(minilm_path, out, "--train_file", str(train_file), "--max_train_samples", "200",
                                 "--learning_rate", "1e-4", "--per_device_train_batch_size", "16",
                                 "--num_train_epochs", "1", *evaluation), check=True, capture_output=True, text=True)
    untrained = json.loads((tmp_path / "untrained" / "all_results.json").read_text())
    results = json.loads((out / "all_results.json").read_text())
    assert results["eval_samples"] == 100 and results["train_samples"] == 200
    # the untrained head answers with arbitrary spans (F1 about 6); 13 steps bring it to about 10
    assert results["eval_f1"] > untrained["eval_f1"] + 2
    model = TFAutoModelForQuestionAnswering.from_pretrained(out)
    assert model.config.architectures == ["BertForQuestionAnswering"]
    context = "The Denver Broncos defeated the Carolina Panthers 24-10 to earn their third Super Bowl title."
    printed = subprocess.run([sys.executable, "-m", "tf_finetune.predict", "--model", str(out), "--question",
                              "Which team won the Super Bowl?", "--context", context],
                             check=True, capture_output=True, text=True).stdout.strip().split("\t")
    assert printed[0] and printed[0] in context and printed[2] == "Which team won the Super Bowl?"
