"""`python -m tf_finetune.export`: PyTorch weights loaded by PyTorch transformers in a process without TensorFlow,
and a SavedModel loaded by tf.saved_model.load in a fresh process, each giving the TF model's outputs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import write_sentiment_files
from hub_server import TOKEN, HubServer, hub, hub_environment  # noqa: F401 - `hub` is a fixture
from tf_finetune.outputs.export import export
from tf_finetune.export import main

REPO = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-4  # max abs difference between TF and PyTorch (or SavedModel) outputs, float32 on CPU
TEXTS = ["the film was great", "a dull plot and a very bad actor , not good"]

# name: (TF Auto class, PyTorch Auto class, fixture, config overrides)
CASES = {
    "sequence-classification": ("TFAutoModelForSequenceClassification", "AutoModelForSequenceClassification",
                                "tiny_bert", {"num_labels": 3}),
    "regression": ("TFAutoModelForSequenceClassification", "AutoModelForSequenceClassification", "tiny_bert",
                   {"num_labels": 1, "problem_type": "regression"}),
    "token-classification": ("TFAutoModelForTokenClassification", "AutoModelForTokenClassification", "tiny_bert",
                             {"num_labels": 5}),
    "question-answering": ("TFAutoModelForQuestionAnswering", "AutoModelForQuestionAnswering", "tiny_bert", {}),
    "multiple-choice": ("TFAutoModelForMultipleChoice", "AutoModelForMultipleChoice", "tiny_bert", {}),
    "masked-lm": ("TFAutoModelForMaskedLM", "AutoModelForMaskedLM", "tiny_bert", {}),
    "causal-lm-gpt2": ("TFAutoModelForCausalLM", "AutoModelForCausalLM", "tiny_gpt2", {}),
    "causal-lm-mistral": ("TFAutoModelForCausalLM", "AutoModelForCausalLM", "tiny_mistral", {}),
}

# Runs in a child process: TensorFlow (and Keras) cannot be imported there, as on a PyTorch-only machine.
PYTORCH_CHECK = textwrap.dedent("""
    import json, os, sys
    os.environ["USE_TF"] = "0"
    for blocked in ("tensorflow", "tf_keras", "keras"):
        sys.modules[blocked] = None  # `import tensorflow` raises ImportError
    import numpy as np, torch, transformers
    from safetensors.numpy import load_file

    report = {}
    for case in json.loads(sys.argv[1]):
        folder = case["folder"]
        auto_class = getattr(transformers, case["auto_class"])
        model, info = auto_class.from_pretrained(folder, output_loading_info=True)
        model.eval()
        saved = load_file(os.path.join(folder, "model.safetensors"))
        state = model.state_dict()
        shapes_differ = [k for k in saved if k in state and tuple(state[k].shape) != saved[k].shape]
        # a parameter that is not in the file must be tied to one that is (e.g. an LM head to the embeddings)
        loaded_pointers = {state[k].data_ptr() for k in saved if k in state}
        untied_missing = [k for k in state if k not in saved and state[k].data_ptr() not in loaded_pointers]
        inputs = {k: torch.from_numpy(v) for k, v in np.load(case["inputs"]).items()}
        with torch.no_grad():
            outputs = model(**inputs)
        np.savez(case["outputs"], **{k: outputs[k].numpy() for k in case["output_names"]})
        report[case["name"]] = {"missing": info["missing_keys"], "unexpected": info["unexpected_keys"],
                                "mismatched": info["mismatched_keys"], "shapes_differ": shapes_differ,
                                "untied_missing": untied_missing, "class": type(model).__name__}
    assert "tensorflow" not in sys.modules or sys.modules["tensorflow"] is None
    print(json.dumps(report))
""")

SAVEDMODEL_CHECK = textwrap.dedent("""
    import json, sys
    import numpy as np, tensorflow as tf

    for case in json.loads(sys.argv[1]):
        serve = tf.saved_model.load(case["folder"]).signatures["serving_default"]
        inputs = {k: tf.constant(v) for k, v in np.load(case["inputs"]).items()}
        outputs = serve(**inputs)
        np.savez(case["outputs"], **{k: outputs[k].numpy() for k in case["output_names"]})
    print("transformers" in sys.modules)
""")


def build_run_dir(path: Path, source: Path, tf_class: str, overrides: dict):
    """A save_pretrained folder of `tf_class` (a new head where the source has none) with the source's tokenizer."""
    from transformers import AutoTokenizer

    from tf_finetune.models.loading import load_model, load_model_config

    model = load_model(tf_class, str(source), load_model_config(str(source), **overrides))
    model.save_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(source)
    tokenizer.save_pretrained(path)
    return model, tokenizer


def model_inputs(tokenizer, multiple_choice: bool) -> dict[str, np.ndarray]:
    """Two padded texts (multiple choice: two questions of three choices each) as int32 arrays."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if multiple_choice:
        first = [text for text in TEXTS for _ in range(3)]
        second = ["yes", "no it was not", "maybe"] * 2
        encoded = tokenizer(first, second, padding=True, return_tensors="np")
        return {k: v.reshape(2, 3, -1).astype(np.int32) for k, v in encoded.items()}
    return {k: v.astype(np.int32) for k, v in tokenizer(TEXTS, padding=True, return_tensors="np").items()}


def tf_outputs(model, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    outputs = model({k: v for k, v in inputs.items() if k in model.input_signature}, training=False)
    names = ["start_logits", "end_logits"] if "start_logits" in outputs else ["logits"]
    return {name: outputs[name].numpy() for name in names}


def run_python(script: str, cases: list[dict], **env: str) -> str:
    result = subprocess.run([sys.executable, "-c", script, json.dumps(cases)], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO), **env}, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


def max_differences(expected: dict[str, np.ndarray], path: str) -> dict[str, float]:
    got = np.load(path)
    return {name: float(np.abs(got[name] - value).max()) for name, value in expected.items()}


@pytest.fixture(scope="module")
def pytorch_exports(request, tmp_path_factory):
    """Every case exported with --format pytorch and run by PyTorch transformers in one TF-free child process."""
    root = tmp_path_factory.mktemp("pytorch-exports")
    cases, expected = [], {}
    for name, (tf_class, pt_class, fixture, overrides) in CASES.items():
        model, tokenizer = build_run_dir(root / name, request.getfixturevalue(fixture), tf_class, overrides)
        inputs = model_inputs(tokenizer, multiple_choice="MultipleChoice" in tf_class)
        np.savez(root / f"{name}-inputs.npz", **inputs)
        expected[name] = tf_outputs(model, inputs)
        assert main([str(root / name), "--format", "pytorch", "--output_dir", str(root / f"{name}-pt")]) == 0
        cases.append({"name": name, "folder": str(root / f"{name}-pt"), "auto_class": pt_class,
                      "inputs": str(root / f"{name}-inputs.npz"), "outputs": str(root / f"{name}-pt-out.npz"),
                      "output_names": list(expected[name])})
    report = json.loads(run_python(PYTORCH_CHECK, cases, USE_TF="0"))
    differences = {case["name"]: max_differences(expected[case["name"]], case["outputs"]) for case in cases}
    return report, differences, root


@pytest.mark.parametrize("name", list(CASES))
def test_pytorch_export_loads_without_tensorflow_and_gives_the_same_logits(pytorch_exports, name):
    report, differences, root = pytorch_exports
    loaded = report[name]
    assert loaded["missing"] == [] and loaded["unexpected"] == [] and loaded["mismatched"] == []
    assert loaded["shapes_differ"] == [] and loaded["untied_missing"] == []
    config = json.loads((root / f"{name}-pt" / "config.json").read_text())
    assert config["architectures"] == [loaded["class"]]
    print(f"{name}: max abs difference TF vs PyTorch {differences[name]}")
    assert max(differences[name].values()) < TOLERANCE


def test_pytorch_export_has_tokenizer_card_and_pt_format(pytorch_exports):
    from safetensors import safe_open

    folder = pytorch_exports[2] / "sequence-classification-pt"
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= set(os.listdir(folder))
    with safe_open(str(folder / "model.safetensors"), "np") as weights:
        assert weights.metadata() == {"format": "pt"}
        assert "classifier.weight" in weights.keys() and not any(":0" in key for key in weights.keys())
    assert not [name for name in os.listdir(folder.parent) if name.startswith(".tmp-")]


def test_savedmodel_export_serves_token_ids_like_the_tf_model(request, tmp_path):
    cases, expected = [], {}
    for name in ("sequence-classification", "question-answering", "multiple-choice", "causal-lm-gpt2"):
        tf_class, _, fixture, overrides = CASES[name]
        model, tokenizer = build_run_dir(tmp_path / name, request.getfixturevalue(fixture), tf_class, overrides)
        inputs = model_inputs(tokenizer, multiple_choice="MultipleChoice" in tf_class)
        inputs = {k: v for k, v in inputs.items() if k in tokenizer.model_input_names}
        np.savez(tmp_path / f"{name}-inputs.npz", **inputs)
        expected[name] = tf_outputs(model, inputs)
        export(str(tmp_path / name), "savedmodel", str(tmp_path / f"{name}-sm"))
        cases.append({"name": name, "folder": str(tmp_path / f"{name}-sm"), "inputs": str(tmp_path / f"{name}-inputs.npz"),
                      "outputs": str(tmp_path / f"{name}-sm-out.npz"), "output_names": list(expected[name])})
    assert run_python(SAVEDMODEL_CHECK, cases) == "False"  # served without importing transformers
    for case in cases:
        difference = max_differences(expected[case["name"]], case["outputs"])
        print(f"{case['name']}: max abs difference TF vs SavedModel {difference}")
        assert max(difference.values()) < TOLERANCE
    assert (tmp_path / "causal-lm-gpt2-sm" / "assets" / "tokenizer" / "tokenizer.json").is_file()


def test_minilm_pytorch_export_matches(minilm_path, tmp_path):
    """The real all-MiniLM-L6-v2 with a classification head: the tolerance the README states."""
    model, tokenizer = build_run_dir(tmp_path / "minilm", minilm_path, "TFAutoModelForSequenceClassification",
                                     {"num_labels": 2})
    inputs = model_inputs(tokenizer, multiple_choice=False)
    np.savez(tmp_path / "inputs.npz", **inputs)
    expected = tf_outputs(model, inputs)
    export(str(tmp_path / "minilm"), "pytorch", str(tmp_path / "minilm-pt"))
    case = {"name": "minilm", "folder": str(tmp_path / "minilm-pt"), "auto_class": "AutoModelForSequenceClassification",
            "inputs": str(tmp_path / "inputs.npz"), "outputs": str(tmp_path / "out.npz"), "output_names": ["logits"]}
    report = json.loads(run_python(PYTORCH_CHECK, [case], USE_TF="0"))["minilm"]
    assert report["missing"] == [] and report["untied_missing"] == [] and report["shapes_differ"] == []
    difference = max_differences(expected, case["outputs"])["logits"]
    print(f"MiniLM: max abs logit difference TF vs PyTorch {difference:.2e} (logits up to {np.abs(expected['logits']).max():.2e})")
    assert difference < TOLERANCE


@pytest.mark.parametrize("arguments, message", [
    (["--format", "tflite"], "unknown --format 'tflite'; pass one of pytorch, savedmodel, gguf, onnx."),
    (["--format", "onnx"], "--format onnx is not offered: tf2onnx 1.17"),
])
def test_bad_format_is_one_line(tiny_bert, tmp_path, capsys, arguments, message):
    assert main([str(tiny_bert), *arguments, "--output_dir", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: {message}") and error.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_folder_that_is_not_a_model_is_one_line(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    assert main([str(tmp_path / "run"), "--format", "pytorch", "--output_dir", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == (f"error: {tmp_path / 'run'} is not a saved model (no config.json); pass a "
                                       "run's output directory or a save_pretrained folder.\n")


def test_non_empty_output_dir_needs_overwrite(tiny_bert, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    assert main([str(tiny_bert), "--format", "pytorch", "--output_dir", str(tmp_path / "out")]) == 2
    assert "is not empty; pass --overwrite_output_dir" in capsys.readouterr().err
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"
    assert main([str(tiny_bert), "--format", "pytorch", "--output_dir", str(tmp_path / "out"),
                 "--overwrite_output_dir"]) == 0
    assert not (tmp_path / "out" / "keep.txt").exists() and (tmp_path / "out" / "model.safetensors").is_file()


HUB_PYTORCH_CHECK = textwrap.dedent("""
    import json, os, sys
    os.environ["USE_TF"] = "0"
    for blocked in ("tensorflow", "tf_keras", "keras"):
        sys.modules[blocked] = None
    import numpy as np, torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    repo, token = sys.argv[1], sys.argv[2]
    model = AutoModelForSequenceClassification.from_pretrained(repo, subfolder="pytorch", token=token).eval()
    tokenizer = AutoTokenizer.from_pretrained(repo, token=token)
    with torch.no_grad():
        logits = model(**tokenizer(["the film was great"], return_tensors="pt")).logits
    print(json.dumps(logits.tolist()))
""")


def test_hub_export_uploads_pytorch_weights_that_pytorch_loads_from_the_hub(hub, tiny_bert, tmp_path):
    from safetensors.numpy import load
    from transformers import AutoTokenizer, TFAutoModelForSequenceClassification

    from tf_finetune.config import TrainConfig
    from tf_finetune.training import train

    files = write_sentiment_files(tmp_path, {"train": 16, "valid": 8})
    train(TrainConfig(task="text-classification", model_name_or_path=str(tiny_bert), train_file=files["train"],
                      validation_file=files["valid"], output_dir=str(tmp_path / "sst-tiny"), num_train_epochs=1,
                      per_device_train_batch_size=8, verbose=0, push_to_hub=True, hub_token=TOKEN,
                      hub_export="pytorch"))
    uploaded = hub.files("alice/sst-tiny")
    assert {"tf_model.h5", "config.json", "pytorch/model.safetensors", "pytorch/config.json"} <= set(uploaded)
    assert "model.safetensors" not in uploaded  # TF from_pretrained would prefer it and fail (transformers 4.57)
    weights = load(uploaded["pytorch/model.safetensors"])
    assert "classifier.weight" in weights and "bert.embeddings.word_embeddings.weight" in weights
    card = uploaded["README.md"].decode()
    assert 'AutoModelForSequenceClassification.from_pretrained("alice/sst-tiny", subfolder="pytorch")' in card
    assert 'TFAutoModelForSequenceClassification.from_pretrained("alice/sst-tiny")' in card

    result = subprocess.run([sys.executable, "-c", HUB_PYTORCH_CHECK, "alice/sst-tiny", TOKEN], capture_output=True,
                            text=True, timeout=600, env={**hub_environment(hub.url, str(tmp_path / "home")),
                                                         "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr[-3000:]
    pytorch_logits = np.array(json.loads(result.stdout.strip().splitlines()[-1]))
    tf_model = TFAutoModelForSequenceClassification.from_pretrained("alice/sst-tiny", token=TOKEN)  # TF still loads
    inputs = AutoTokenizer.from_pretrained("alice/sst-tiny", token=TOKEN)(["the film was great"], return_tensors="tf")
    difference = np.abs(tf_model(inputs).logits.numpy() - pytorch_logits).max()
    print(f"hub export: max abs difference TF vs PyTorch {difference:.2e}")
    assert difference < TOLERANCE


def test_push_command_adds_pytorch_weights(hub, tiny_bert, tmp_path):
    from tf_finetune import push

    run_dir = tmp_path / "run"
    build_run_dir(run_dir, tiny_bert, "TFAutoModelForSequenceClassification", {"num_labels": 2})
    (run_dir / "run_config.json").write_text(json.dumps({"task": "text-classification"}))
    assert push.main([str(run_dir), "--hub_model_id", "alice/pushed", "--hub_token", TOKEN,
                      "--hub_export", "pytorch"]) == 0
    uploaded = hub.files("alice/pushed")
    assert 'subfolder="pytorch"' in uploaded["README.md"].decode()  # the card, written after the export, tells of it
    assert {"tf_model.h5", "pytorch/model.safetensors", "pytorch/config.json", "pytorch/tokenizer.json"} <= set(uploaded)
    assert json.loads(uploaded["pytorch/config.json"])["architectures"] == ["BertForSequenceClassification"]
