"""The bundled evaluate metrics match scikit-learn/scipy, load offline, and unknown metrics fail as UserError."""
import errno
import os
import shutil
import socket

import evaluate
import huggingface_hub
import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

import tf_finetune.metrics
from tf_finetune.core.errors import UserError
from tf_finetune.metrics import compute_metrics, list_metrics, load_metric

METRICS_DIR = os.path.dirname(os.path.abspath(tf_finetune.metrics.__file__))
RNG = np.random.default_rng(0)
BINARY_PRED, BINARY_REF = RNG.integers(0, 2, 40), RNG.integers(0, 2, 40)
CLASS_PRED, CLASS_REF = RNG.integers(0, 3, 40), RNG.integers(0, 3, 40)
SCORE_PRED, SCORE_REF = RNG.uniform(0, 5, 40), RNG.uniform(0, 5, 40)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Fail any connection attempt, and fail the test if one was made: nothing here may fetch."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise socket.gaierror("network disabled in tests")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    yield
    assert attempts == []


def test_list_metrics():
    assert list_metrics() == ["accuracy", "f1", "glue", "matthews_correlation", "pearsonr", "seqeval", "spearmanr",
                              "squad", "squad_v2"]


def test_evaluate_loads_bundled_directory_by_absolute_path():
    metric = evaluate.load(os.path.join(METRICS_DIR, "accuracy"))
    assert isinstance(metric, evaluate.Metric)
    assert metric.compute(predictions=[1, 0, 1], references=[1, 1, 1]) == {"accuracy": pytest.approx(2 / 3)}


def test_accuracy():
    metric = load_metric("accuracy")
    weights = RNG.uniform(size=40)
    assert metric.compute(predictions=CLASS_PRED, references=CLASS_REF) == {
        "accuracy": pytest.approx(accuracy_score(CLASS_REF, CLASS_PRED))
    }
    assert metric.compute(predictions=CLASS_PRED, references=CLASS_REF, normalize=False)["accuracy"] == accuracy_score(
        CLASS_REF, CLASS_PRED, normalize=False
    )
    assert metric.compute(predictions=CLASS_PRED, references=CLASS_REF, sample_weight=weights)[
        "accuracy"
    ] == pytest.approx(accuracy_score(CLASS_REF, CLASS_PRED, sample_weight=weights))


def test_accuracy_and_f1_multilabel():
    pred, ref = RNG.integers(0, 2, (20, 3)), RNG.integers(0, 2, (20, 3))
    accuracy = load_metric("accuracy", "multilabel").compute(predictions=pred, references=ref)["accuracy"]
    assert accuracy == pytest.approx(accuracy_score(ref, pred))
    f1 = load_metric("f1", "multilabel").compute(predictions=pred, references=ref, average="macro")["f1"]
    assert f1 == pytest.approx(f1_score(ref, pred, average="macro"))


@pytest.mark.parametrize(
    ("pred", "ref", "kwargs"),
    [
        (BINARY_PRED, BINARY_REF, {}),
        (BINARY_PRED, BINARY_REF, {"pos_label": 0}),
        (CLASS_PRED, CLASS_REF, {"average": "macro"}),
        (CLASS_PRED, CLASS_REF, {"average": "micro"}),
        (CLASS_PRED, CLASS_REF, {"average": "weighted", "labels": [0, 2]}),
    ],
)
def test_f1(pred, ref, kwargs):
    result = load_metric("f1").compute(predictions=pred, references=ref, **kwargs)
    assert result == {"f1": pytest.approx(f1_score(ref, pred, **kwargs))}
    assert type(result["f1"]) is float


def test_f1_per_label():
    result = load_metric("f1").compute(predictions=CLASS_PRED, references=CLASS_REF, average=None)
    np.testing.assert_allclose(result["f1"], f1_score(CLASS_REF, CLASS_PRED, average=None))


def test_matthews_correlation():
    result = load_metric("matthews_correlation").compute(predictions=CLASS_PRED, references=CLASS_REF)
    assert result == {"matthews_correlation": pytest.approx(matthews_corrcoef(CLASS_REF, CLASS_PRED))}


@pytest.mark.parametrize(("name", "scipy_fn", "pvalue_key"), [("pearsonr", pearsonr, "p-value"),
                                                              ("spearmanr", spearmanr, "spearmanr_pvalue")])
def test_correlations(name, scipy_fn, pvalue_key):
    metric = load_metric(name)
    expected, pvalue = scipy_fn(SCORE_REF, SCORE_PRED)
    assert metric.compute(predictions=SCORE_PRED, references=SCORE_REF) == {name: pytest.approx(expected)}
    result = metric.compute(predictions=SCORE_PRED, references=SCORE_REF, return_pvalue=True)
    assert result == {name: pytest.approx(expected), pvalue_key: pytest.approx(pvalue)}


@pytest.mark.parametrize(
    "config", ["sst2", "mnli", "mnli_matched", "mnli_mismatched", "qnli", "rte", "wnli", "hans"]
)
def test_glue_accuracy_configs(config):
    result = load_metric("glue", config).compute(predictions=CLASS_PRED, references=CLASS_REF)
    assert result == {"accuracy": pytest.approx(accuracy_score(CLASS_REF, CLASS_PRED))}


@pytest.mark.parametrize("config", ["mrpc", "qqp"])
def test_glue_accuracy_and_f1_configs(config):
    result = load_metric("glue", config).compute(predictions=BINARY_PRED, references=BINARY_REF)
    assert result == {
        "accuracy": pytest.approx(accuracy_score(BINARY_REF, BINARY_PRED)),
        "f1": pytest.approx(f1_score(BINARY_REF, BINARY_PRED)),
    }


def test_glue_cola():
    result = load_metric("glue", "cola").compute(predictions=BINARY_PRED, references=BINARY_REF)
    assert result == {"matthews_correlation": pytest.approx(matthews_corrcoef(BINARY_REF, BINARY_PRED))}


def test_glue_stsb_uses_float32():
    metric = load_metric("glue", "stsb")
    assert {column: str(value.dtype) for column, value in metric.features.items()} == {
        "predictions": "float32",
        "references": "float32",
    }
    pred, ref = SCORE_PRED.astype(np.float32), SCORE_REF.astype(np.float32)
    assert metric.compute(predictions=SCORE_PRED, references=SCORE_REF) == {
        "pearson": pytest.approx(pearsonr(pred, ref)[0], rel=1e-6),
        "spearmanr": pytest.approx(spearmanr(pred, ref)[0], rel=1e-6),
    }


def test_glue_int_configs_use_int64():
    assert str(load_metric("glue", "cola").features["predictions"].dtype) == "int64"


def test_glue_unknown_config():
    with pytest.raises(ValueError, match="stsb"):
        load_metric("glue", "squad")


def test_load_metric_is_cached():
    assert load_metric("accuracy") is load_metric("accuracy")
    assert load_metric("glue", "sst2") is load_metric("glue", "sst2")
    assert load_metric("glue", "sst2") is not load_metric("glue", "mrpc")


def test_load_metric_from_local_directory_and_file(tmp_path, monkeypatch):
    metric_dir = tmp_path / "my_accuracy"
    metric_dir.mkdir()
    shutil.copyfile(os.path.join(METRICS_DIR, "accuracy", "accuracy.py"), metric_dir / "my_accuracy.py")
    monkeypatch.chdir(tmp_path)
    by_dir = load_metric("my_accuracy")
    assert by_dir is load_metric(str(metric_dir))
    assert by_dir.compute(predictions=[0, 1], references=[1, 1]) == {"accuracy": 0.5}
    by_file = load_metric(str(metric_dir / "my_accuracy.py"))
    assert by_file.compute(predictions=[1, 1], references=[1, 1]) == {"accuracy": 1.0}


def test_unknown_metric_offline_is_user_error(monkeypatch):
    # evaluate 0.4.6 reads only HF_EVALUATE_OFFLINE (once, at import, into evaluate.config); load_metric makes it
    # honour huggingface_hub's HF_HUB_OFFLINE too, so no_network sees no attempt even with evaluate "online".
    monkeypatch.setattr(evaluate.config, "HF_EVALUATE_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserError) as raised:
        load_metric("no_such_metric_xyz")
    message = str(raised.value)
    assert "\n" not in message
    assert "'no_such_metric_xyz'" in message and "local path" in message
    assert all(name in message for name in list_metrics())
    assert evaluate.config.HF_EVALUATE_OFFLINE is False


def test_unwritable_cache_is_user_error(monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", "/ro/huggingface/modules")

    monkeypatch.setattr(evaluate, "load", read_only)
    with pytest.raises(UserError, match="HF_HOME"):
        load_metric("accuracy", "read-only-cache")


def test_compute_metrics_returns_plain_floats():
    result = compute_metrics(load_metric("glue", "mrpc"), BINARY_PRED, BINARY_REF)
    assert set(result) == {"accuracy", "f1"} and all(type(value) is float for value in result.values())
    per_label = compute_metrics(load_metric("f1"), CLASS_PRED, CLASS_REF, average=None)
    expected = f1_score(CLASS_REF, CLASS_PRED, average=None)
    assert per_label == {f"f1_{label}": pytest.approx(expected[label]) for label in range(3)}
    assert all(type(value) is float for value in per_label.values())
