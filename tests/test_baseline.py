"""The feature-extraction baseline: frozen-encoder features, LogisticRegression with C chosen by cross-validation,
scored with the task's metrics into all_results.json."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import sentiment_rows, write_csv, write_sentiment_files
from tf_finetune.training.baseline import C_GRID, base_encoder, chosen_c, encode, encode_split, fit_classifier
from tf_finetune.config import TrainConfig
from tf_finetune.core.errors import UserError
from tf_finetune.training import FineTuneRun, train


def config_for(tiny_bert, tmp_path, sizes=None, **overrides) -> TrainConfig:
    tmp_path.mkdir(parents=True, exist_ok=True)
    files = write_sentiment_files(tmp_path, sizes or {"train": 160, "validation": 60})
    values = dict(task="text-classification", model_name_or_path=str(tiny_bert), train_file=files["train"],
                  validation_file=files["validation"], output_dir=str(tmp_path / "out"), num_train_epochs=1,
                  per_device_train_batch_size=16, verbose=0, save_strategy="no", features_baseline=True)
    return TrainConfig(**{**values, **overrides})


def test_baseline_beats_chance_and_lands_in_all_results(tiny_bert, tmp_path):
    results = train(config_for(tiny_bert, tmp_path, pooling="mean"))
    saved = json.loads((tmp_path / "out" / "all_results.json").read_text())
    assert saved == results
    # The same metrics as the fine-tuned model's (text-classification: accuracy and macro F1), prefixed.
    assert {"baseline_eval_accuracy", "baseline_eval_f1", "baseline_C", "baseline_runtime"} <= set(saved)
    assert {"eval_accuracy", "eval_f1"} <= set(saved)
    assert saved["baseline_eval_accuracy"] >= 0.9  # the label follows from one word; chance is 0.5
    assert saved["baseline_C"] in C_GRID and saved["baseline_runtime"] > 0


def test_baseline_does_not_change_fine_tuning(tiny_bert, tmp_path):
    with_baseline = train(config_for(tiny_bert, tmp_path / "a"))
    without = train(config_for(tiny_bert, tmp_path / "b", features_baseline=False))
    assert not any(key.startswith("baseline_") for key in without)
    for key in ("eval_loss", "eval_accuracy", "train_loss"):
        assert with_baseline[key] == without[key]


def test_cls_and_mean_pooling_differ(tiny_bert, tmp_path):
    run = FineTuneRun(config_for(tiny_bert, tmp_path))
    cls_features, labels = encode_split(run, "validation", "cls")
    mean_features, mean_labels = encode_split(run, "validation", "mean")
    assert cls_features.shape == mean_features.shape == (60, 32)
    np.testing.assert_array_equal(labels, mean_labels)
    assert not np.allclose(cls_features, mean_features, atol=1e-3)


def test_padding_does_not_change_mean_pooled_features(tiny_bert, tmp_path):
    run = FineTuneRun(config_for(tiny_bert, tmp_path))
    encoder = base_encoder(run.model)
    text, longer = "the film was good", "the music of this movie was really very lovely and the plot was superb"
    alone = dict(run.preprocessor([text], return_tensors="tf"))
    padded = dict(run.preprocessor([text, longer], padding=True, return_tensors="tf"))
    assert int(padded["attention_mask"][0].numpy().sum()) < padded["attention_mask"].shape[1]  # row 0 is padded
    np.testing.assert_allclose(encode(encoder, [alone], "mean")[0], encode(encoder, [padded], "mean")[0], atol=1e-5)
    np.testing.assert_allclose(encode(encoder, [alone], "cls")[0], encode(encoder, [padded], "cls")[0], atol=1e-5)


def test_lora_run_encodes_with_the_pretrained_weights(tiny_bert, tmp_path):
    plain, _ = encode_split(FineTuneRun(config_for(tiny_bert, tmp_path)), "validation", "cls")
    lora, _ = encode_split(FineTuneRun(config_for(tiny_bert, tmp_path, lora_rank=4)), "validation", "cls")
    np.testing.assert_allclose(plain, lora, atol=1e-5)


def test_regression_data_is_refused_in_one_line(tiny_bert, tmp_path):
    rows = [(sentence, float(i % 5)) for i, (sentence, _) in enumerate(sentiment_rows(24))]
    path = write_csv(tmp_path / "scores.csv", rows)
    config = config_for(tiny_bert, tmp_path, train_file=path, validation_file=path)
    with pytest.raises(UserError, match="regression") as error:
        FineTuneRun(config)
    assert "\n" not in str(error.value)


def test_non_classification_task_is_refused_in_one_line(tiny_bert, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(sentence for sentence, _ in sentiment_rows(40)) + "\n")
    config = config_for(tiny_bert, tmp_path, task="mlm", train_file=str(corpus), validation_file=str(corpus))
    with pytest.raises(UserError, match="not a classification task") as error:
        FineTuneRun(config)
    assert "\n" not in str(error.value)


def test_pooling_and_baseline_settings_are_checked():
    with pytest.raises(UserError, match="--features_baseline"):
        TrainConfig(pooling="mean").validate()
    with pytest.raises(UserError, match="pooling must be one of cls, mean"):
        TrainConfig(features_baseline=True, pooling="max").validate()
    with pytest.raises(UserError, match="validation split"):
        TrainConfig(features_baseline=True, do_eval=False).validate()


def test_cross_validation_chooses_c_from_the_grid():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 30)
    features = rng.normal(size=(90, 8)) + labels[:, None] * 0.5
    grid = (0.005, 0.5, 50.0)
    search = fit_classifier(features, labels, seed=0, grid=grid)
    assert chosen_c(search) in grid
    assert search.cv.n_splits == 5 and len(search.cv_results_["params"]) == 3
    few = fit_classifier(features[:9], np.tile([0, 1, 2], 3), seed=0)
    assert few.cv.n_splits == 3 and chosen_c(few) in C_GRID  # three examples per class: three folds
    with pytest.raises(UserError, match="at least two training examples"):
        fit_classifier(features[:3], np.array([0, 1, 1]))


def test_glue_stsb_is_refused_before_the_model_loads(tiny_bert, tmp_path, monkeypatch):
    from glue_layout import write_glue_layout

    import tf_finetune.training.run as training

    monkeypatch.setattr(training, "load_model", lambda *args: pytest.fail("the model was loaded"))
    config = TrainConfig(task="stsb", model_name_or_path=str(tiny_bert), data_dir=str(write_glue_layout(tmp_path)),
                         output_dir=str(tmp_path / "out"), features_baseline=True)
    with pytest.raises(UserError, match="stsb is regression"):
        FineTuneRun(config)
