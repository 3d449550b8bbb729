"""Strategies, gradient accumulation, mixed precision, XLA and TPU-ready input on a CPU-only machine.

Several replicas need TensorFlow set up before it starts, so those runs are subprocesses: two logical CPUs
(TF_FINETUNE_LOGICAL_CPUS=2) under MirroredStrategy, and two local worker processes under
MultiWorkerMirroredStrategy. Both must give the weights of one device with the same global batch. To compare them:
- dropout is off;
- Adam's epsilon is 1, which makes its steps nearly proportional to the gradient (like SGD): a gradient off by a
  factor (say, a missing 1/replicas) shows, and rounding noise in near-zero gradients (attention key biases, unused
  embedding rows) is not blown up into steps of random sign as Adam's normalisation does with a tiny epsilon;
- gradient clipping is off: TensorFlow computes the global norm of a sparse (embedding) gradient over its rows
  without merging duplicate indices, and replicas' (or micro-batches') sparse gradients are concatenated, so the
  clipping factor can differ by a few per cent between one device and several.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import re
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from safetensors.numpy import load_file

from conftest import command_error, write_sentiment_files
from tf_finetune.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]
# Largest weight difference allowed between a distributed run and one device (measured: at most 3e-8).
TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def bert_without_dropout(tiny_bert, tmp_path_factory) -> Path:
    """The tiny BERT with dropout off, so that runs on different devices see the same network."""
    directory = tmp_path_factory.mktemp("tiny-bert-no-dropout") / "model"
    shutil.copytree(tiny_bert, directory)
    config = json.loads((directory / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (directory / "config.json").write_text(json.dumps(config))
    return directory


@pytest.fixture(scope="module")
def data_files(tmp_path_factory) -> dict[str, str]:
    directory = tmp_path_factory.mktemp("sentiment")
    return write_sentiment_files(directory, {"train": 64, "validation": 16}, header=("sentence", "label"))


def cli_args(model: Path, data_files: dict[str, str], output_dir: str, *extra: str) -> list[str]:
    return ["--task", "text-classification", "--model_name_or_path", str(model), "--train_file", data_files["train"],
            "--validation_file", data_files["validation"], "--output_dir", output_dir, "--num_train_epochs", "1",
            "--learning_rate", "0.1", "--adam_epsilon", "1", "--max_grad_norm", "1000",
            "--load_best_model_at_end", "false", "--verbose", "0", *extra]


def run_cli(args: list[str], cwd: Path = REPO, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tf_finetune.train", *args], cwd=cwd, text=True,
                            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def finish(process: subprocess.Popen) -> str:
    try:
        output, _ = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    assert process.returncode == 0, output[-3000:]
    return output


def saved_weights(output_dir: Path) -> dict[str, np.ndarray]:
    """The weights in tf_model.h5 by layer path, without the model class's name (`bert/bert/embeddings/...`)."""
    weights = {}

    def keep(name: str, item) -> None:
        if isinstance(item, h5py.Dataset):
            group, _model, *path = name.split("/")
            weights["/".join([group, *path])] = item[()]

    with h5py.File(output_dir / "tf_model.h5") as file:
        file.visititems(keep)
    return weights


def largest_difference(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(a[name] - b[name]))) for name in a)


@pytest.fixture(scope="module")
def one_device(bert_without_dropout, data_files, tmp_path_factory) -> dict[str, np.ndarray]:
    """Weights after one epoch on one device with a global batch of 8."""
    output_dir = tmp_path_factory.mktemp("one-device") / "out"
    finish(run_cli(cli_args(bert_without_dropout, data_files, str(output_dir), "--per_device_train_batch_size", "8")))
    weights = saved_weights(output_dir)
    untrained = saved_weights(bert_without_dropout)
    assert largest_difference({name: weights[name] for name in untrained}, untrained) > 100 * TOLERANCE
    return weights


@pytest.mark.parametrize("per_device, accumulation", [(4, 1), (2, 2)])
def test_two_mirrored_cpus_match_one_device(bert_without_dropout, data_files, one_device, tmp_path, per_device,
                                            accumulation):
    output_dir = tmp_path / "out"
    output = finish(run_cli(cli_args(bert_without_dropout, data_files, str(output_dir), "--strategy", "mirrored",
                                     "--per_device_train_batch_size", str(per_device), "--jit_compile",
                                     "--gradient_accumulation_steps", str(accumulation)),
                            TF_FINETUNE_LOGICAL_CPUS="2"))
    assert "Distribution: MirroredStrategy, 2 replicas on CPU:0, CPU:1." in output
    assert "--jit_compile is off" in output  # XLA cannot all-gather embedding gradients between replicas
    assert largest_difference(saved_weights(output_dir), one_device) < TOLERANCE


def test_lora_on_two_mirrored_cpus_with_accumulation_matches_one_device(bert_without_dropout, data_files,
                                                                       tmp_path):
    lora = ["--lora_rank", "4"]
    one = tmp_path / "one"
    finish(run_cli(cli_args(bert_without_dropout, data_files, str(one), "--per_device_train_batch_size", "8", *lora)))
    two = tmp_path / "two"
    output = finish(run_cli(cli_args(bert_without_dropout, data_files, str(two), "--strategy", "mirrored",
                                     "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "2", *lora),
                            TF_FINETUNE_LOGICAL_CPUS="2"))
    assert "2 replicas" in output and "Trainable parameters:" in output
    adapters = [load_file(str(run / "adapter" / "adapter_model.safetensors")) for run in (one, two)]
    assert max(float(np.abs(value).max()) for name, value in adapters[0].items() if "lora_B" in name) > 100 * TOLERANCE
    assert largest_difference(*adapters) < TOLERANCE
    assert largest_difference(saved_weights(two), saved_weights(one)) < TOLERANCE


def free_ports(count: int) -> list[int]:
    """Distinct free ports on 127.0.0.1 (all held open while choosing, so none repeats)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def test_two_workers_train_one_model_and_only_the_chief_writes(bert_without_dropout, data_files, one_device,
                                                                tmp_path):
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    workers = []
    for index in range(2):
        folder = tmp_path / f"worker{index}"
        (folder / "tmp").mkdir(parents=True)
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        workers.append(run_cli(cli_args(bert_without_dropout, data_files, "out", "--strategy", "multi_worker",
                                        "--per_device_train_batch_size", "4"),
                               cwd=folder, TF_CONFIG=tf_config, TMPDIR=str(folder / "tmp"),
                               HF_DATASETS_CACHE=str(folder / "datasets-cache")))
    try:
        outputs = [finish(worker) for worker in workers]
    finally:  # a worker whose peer failed would wait for it forever
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    assert "this worker (worker 0, the chief)" in outputs[0] and "this worker (worker 1)" in outputs[1]
    assert "MultiWorkerMirroredStrategy, 2 replicas" in outputs[1]
    chief_dir, other_dir = tmp_path / "worker0" / "out", tmp_path / "worker1" / "out"
    assert {"all_results.json", "tf_model.h5", "history.json"} <= {p.name for p in chief_dir.iterdir()}
    assert not other_dir.exists()  # the non-chief wrote into a scratch folder ...
    assert not any((tmp_path / "worker1" / "tmp").iterdir())  # ... which is gone
    assert largest_difference(saved_weights(chief_dir), one_device) < TOLERANCE
    results = json.loads((chief_dir / "all_results.json").read_text())
    assert results["eval_samples"] == 16 and np.isfinite(results["eval_loss"])


def test_tpu_without_a_tpu_fails_fast_with_one_line(tmp_path, capsys):
    from tf_finetune.train import main

    start = time.perf_counter()
    code = main(["--task", "text-classification", "--strategy", "tpu", "--output_dir", str(tmp_path / "out")])
    error = command_error(capsys.readouterr().err)
    assert code == 2 and time.perf_counter() - start < 30
    assert error.startswith("error: --strategy tpu: no TPU reachable at 'local'")
    assert not (tmp_path / "out").exists()


def test_strategy_choices_and_their_errors(monkeypatch):
    import tensorflow as tf

    from tf_finetune.runtime.distribute import resolve_strategy
    from tf_finetune.core.errors import UserError

    for name in ("TF_CONFIG", "COLAB_TPU_ADDR", "TPU_NAME"):
        monkeypatch.delenv(name, raising=False)
    assert resolve_strategy(TrainConfig(strategy="auto")) is tf.distribute.get_strategy()  # no TPU, GPUs, cluster
    cpu = resolve_strategy(TrainConfig(strategy="cpu"))
    assert isinstance(cpu, tf.distribute.OneDeviceStrategy) and resolve_strategy(TrainConfig(strategy="cpu")) is cpu
    with pytest.raises(UserError, match="--strategy gpu: TensorFlow sees no GPU"):
        resolve_strategy(TrainConfig(strategy="gpu"))
    with pytest.raises(UserError, match="--strategy multi_worker needs TF_CONFIG"):
        resolve_strategy(TrainConfig(strategy="multi_worker"))
    with pytest.raises(UserError, match="TPUs do not support --mixed_precision fp16"):
        resolve_strategy(TrainConfig(strategy="tpu", mixed_precision="fp16"))
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(UserError, match="TF_CONFIG is not a JSON object"):
        resolve_strategy(TrainConfig(strategy="auto"))


def tiny_classifier():
    import tf_keras
    from transformers import BertConfig, TFBertForSequenceClassification

    config = BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0, num_labels=2)
    tf_keras.utils.set_random_seed(7)
    model = TFBertForSequenceClassification(config)
    model(model.dummy_inputs)
    return model


@pytest.mark.parametrize("loss_scaling", [False, True])
def test_accumulating_two_batches_of_four_equals_one_batch_of_eight(loss_scaling):
    import tensorflow as tf
    import tf_keras

    from tf_finetune.runtime.accumulation import accumulate_gradients

    rng = np.random.default_rng(0)
    features = {"input_ids": rng.integers(5, 60, (16, 10)).astype("int32"),
                "attention_mask": (rng.random((16, 10)) > 0.2).astype("int32")}
    dataset = tf.data.Dataset.from_tensor_slices((features, rng.integers(0, 2, 16))).batch(8)
    models = []
    for steps in (1, 2):
        model = tiny_classifier()
        if steps > 1:
            accumulate_gradients(model, steps)
        optimizer = tf_keras.optimizers.legacy.SGD(0.5)  # steps proportional to the gradient: scale errors show
        if loss_scaling:
            optimizer = tf_keras.mixed_precision.LossScaleOptimizer(optimizer)
        model.compile(optimizer=optimizer)
        model.fit(dataset, epochs=1, verbose=0)
        assert int(model.optimizer.iterations) == 2  # one update per batch of 8, not per micro-batch of 4
        models.append(model)
    plain, accumulated = models
    assert type(accumulated).__name__ == "TFBertForSequenceClassification"  # save_pretrained's architectures
    def weights(model) -> dict[str, np.ndarray]:
        return {variable.name.split("/", 1)[1]: variable.numpy() for variable in model.trainable_variables}

    assert largest_difference(weights(plain), weights(tiny_classifier())) > 1e-3
    assert largest_difference(weights(plain), weights(accumulated)) < TOLERANCE


def run_config(model: Path, data_files: dict[str, str], tmp_path: Path, **overrides) -> TrainConfig:
    values = dict(task="text-classification", model_name_or_path=str(model), train_file=data_files["train"],
                  validation_file=data_files["validation"], output_dir=str(tmp_path / "out"), num_train_epochs=1,
                  per_device_train_batch_size=4, learning_rate=1e-3, verbose=0)
    return TrainConfig(**{**values, **overrides})


def test_a_notebook_run_trains_under_the_configured_strategy(bert_without_dropout, data_files, tmp_path):
    import tensorflow as tf

    from tf_finetune.runtime.distribute import resolve_strategy
    from tf_finetune.training import FineTuneRun

    config = run_config(bert_without_dropout, data_files, tmp_path, strategy="cpu")
    run = FineTuneRun(config)  # no strategy passed: config.strategy's, as train resolves it
    assert run.strategy is resolve_strategy(config) and isinstance(run.strategy, tf.distribute.OneDeviceStrategy)
    assert all(run.strategy.extended.variable_created_in_scope(weight) for weight in run.model.weights)


def test_schedule_counts_optimizer_updates_with_accumulation(bert_without_dropout, data_files, tmp_path):
    from tf_finetune.training import FineTuneRun

    run = FineTuneRun(run_config(bert_without_dropout, data_files, tmp_path, gradient_accumulation_steps=2,
                                 num_train_epochs=2))
    assert run.global_train_batch_size == 8 and run.steps_per_epoch == 64 // 8
    assert next(iter(run.train_dataset))[1].shape[0] == 8  # one batch holds both micro-batches
    run.compile()
    run.model.fit(run.train_dataset, epochs=2, verbose=0)
    optimizer = run.model.optimizer
    assert int(optimizer.iterations) == 2 * run.steps_per_epoch
    assert float(optimizer.learning_rate(optimizer.iterations)) == pytest.approx(0.0)  # linear decay just ended


def test_bf16_with_xla_trains_to_finite_losses_and_restores_float32(bert_without_dropout, data_files, tmp_path):
    import tf_keras

    from tf_finetune.training import train

    results = train(run_config(bert_without_dropout, data_files, tmp_path, mixed_precision="bf16",
                               jit_compile=True))
    assert np.isfinite(results["train_loss"]) and np.isfinite(results["eval_loss"])
    assert tf_keras.mixed_precision.global_policy().name == "float32"


def test_fp16_builds_a_mixed_model_with_loss_scaling(bert_without_dropout, data_files, tmp_path):
    import tf_keras

    from tf_finetune.training import FineTuneRun

    run = FineTuneRun(run_config(bert_without_dropout, data_files, tmp_path, mixed_precision="fp16"))
    assert tf_keras.mixed_precision.global_policy().name == "float32"
    assert run.model.layers[0].dtype_policy.name == "mixed_float16"
    run.compile()
    assert isinstance(run.model.optimizer, tf_keras.mixed_precision.LossScaleOptimizer)
    history = run.model.fit(run.train_dataset.take(2), verbose=0).history
    assert np.isfinite(history["loss"][0])


def test_padding_multiple_rules():
    import tensorflow as tf

    from tf_finetune.runtime.distribute import pad_multiple
    from tf_finetune.core.errors import UserError

    default = tf.distribute.get_strategy()
    assert pad_multiple(TrainConfig(max_seq_length=100), xla=False, strategy=default, max_length=128) is None
    assert pad_multiple(TrainConfig(max_seq_length=100), xla=True, strategy=default, max_length=128) == 64
    # 64 would pad 500 to 512, past a model's 510 positions: every batch gets max_seq_length instead
    assert pad_multiple(TrainConfig(max_seq_length=500), xla=True, strategy=default, max_length=510) == 500
    with pytest.raises(UserError, match="--pad_to_multiple_of must be a positive number, got 0"):
        TrainConfig(pad_to_multiple_of=0).validate()
    with pytest.raises(UserError, match="--pad_to_multiple_of 96 pads --max_seq_length 100 to 192"):
        pad_multiple(TrainConfig(max_seq_length=100, pad_to_multiple_of=96), xla=False, strategy=default,
                     max_length=128)


def test_xla_pads_to_multiples_and_tpu_input_is_fixed_shape_tensors(bert_without_dropout, data_files, tmp_path, monkeypatch):
    import tf_finetune.runtime.distribute
    import tf_finetune.training.run
    from tf_finetune.training import FineTuneRun

    config = run_config(bert_without_dropout, data_files, tmp_path, jit_compile=True)
    host_run = FineTuneRun(config)
    assert host_run.config.jit_compile and host_run.config.pad_to_multiple_of == 64  # XLA: few shapes
    assert {features["input_ids"].shape[1] for features, _ in host_run.train_dataset} == {64}
    assert b"PyFunc" in host_run.train_dataset._as_serialized_graph().numpy()  # prepare_tf_dataset: Python
    for module in (tf_finetune.runtime.distribute, tf_finetune.training.run):
        monkeypatch.setattr(module, "needs_static_shapes", lambda strategy: True)
    run = FineTuneRun(config)
    assert not run.config.jit_compile  # TPUs compile everything; Keras' jit_compile stays off
    assert b"PyFunc" not in run.train_dataset._as_serialized_graph().numpy()
    features, labels = run.train_dataset.element_spec
    assert all(spec.shape.is_fully_defined() for spec in features.values()) and labels.shape == (4,)
    assert features["input_ids"].shape[1] == 64
    assert run.train_dataset.cardinality() == 16 and run.eval_dataset.cardinality() == 1
    assert sum(int(labels.shape[0]) for _, labels in run.eval_dataset) == 16  # evaluation keeps every example
    run.compile()
    assert np.isfinite(run.model.fit(run.train_dataset, verbose=0).history["loss"][0])


def test_colab_tpu_notebook_is_valid_and_uses_the_tpu_strategy():
    import nbformat

    notebook = nbformat.read(REPO / "examples" / "colab_tpu.ipynb", as_version=4)
    nbformat.validate(notebook)
    code = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")
    assert "--strategy tpu" in code or 'strategy="tpu"' in code
    assert "tensorflow-tpu" in code and "tf-keras" in code


def test_search_trials_train_on_every_mirrored_replica(bert_without_dropout, data_files, tmp_path):
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"learning_rate": {"type": "choice", "values": [0.01]},
                                 "per_device_train_batch_size": {"type": "choice", "values": [4]}}))
    output = finish(run_cli(cli_args(bert_without_dropout, data_files, str(tmp_path / "out"), "--strategy", "mirrored",
                                     "--tune", "random", "--max_trials", "1", "--tune_space", str(space),
                                     "--no_tune_retrain"),
                            TF_FINETUNE_LOGICAL_CPUS="2"))
    assert "Search trials run under MirroredStrategy, 2 replicas" in output
    # 64 training examples in global batches of 4 per replica x 2 replicas.
    assert re.search(r"Trial \w+: 8 optimizer steps per epoch of 8 examples \(MirroredStrategy, 2 replicas", output)
