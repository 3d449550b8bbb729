"""Where a run executes: the tf.distribute strategy, which worker writes, mixed precision, XLA and TPU-ready input.

`resolve_strategy(config)` turns `--strategy` (and the environment) into a strategy; it must run before anything
else touches TensorFlow's devices, because multi-worker collectives and logical CPUs can only be set up then.

`auto` picks, in order: a TPU when one is reachable (`--tpu`, Colab's `COLAB_TPU_ADDR`, `TPU_NAME`, or TPU chips on
this machine), `MultiWorkerMirroredStrategy` when `TF_CONFIG` names several workers, `MirroredStrategy` over all
local GPUs when there are several, else TensorFlow's default strategy.

For tests on CPU-only machines, `TF_FINETUNE_LOGICAL_CPUS=N` splits the CPU into N logical devices, which
`--strategy mirrored` then uses as replicas when there is no GPU.
"""
from __future__ import annotations

import contextlib
import glob
import json
import logging
import math
import os
import shutil
import tempfile
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, Sequence

import tensorflow as tf
import tf_keras

from tf_finetune.core.errors import UserError
from tf_finetune.models.functions import XLA_PAD_MULTIPLE

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import TFPreTrainedModel

    from tf_finetune.config import TrainConfig

logger = logging.getLogger(__name__)

LOGICAL_CPUS_ENV = "TF_FINETUNE_LOGICAL_CPUS"
POLICIES = {"fp16": "mixed_float16", "bf16": "mixed_bfloat16"}

_GOOGLE_PCI_VENDOR = "0x1ae0"
_TPU_PCI_DEVICES = {"0x0027", "0x0056", "0x005e", "0x0062", "0x0063", "0x006f", "0x0076"}  # TPU v2 ... 7x


def resolve_strategy(config: "TrainConfig") -> tf.distribute.Strategy:
    """The strategy `--strategy` asks for; a UserError when the hardware or cluster it needs is not there.

    A process builds each strategy once and reuses it (a multi-worker strategy cannot be set up twice), e.g. for
    the retraining after a hyperparameter search.
    """
    _split_cpu(os.environ.get(LOGICAL_CPUS_ENV))
    name = config.strategy
    if name == "auto":
        if config.tpu or _tpu_hinted():
            name = "tpu"
        elif _cluster_size() > 1:
            name = "multi_worker"
        elif len(tf.config.list_physical_devices("GPU")) > 1:
            name = "mirrored"
        else:
            return tf.distribute.get_strategy()
    if name == "tpu" and config.mixed_precision == "fp16":
        raise UserError("TPUs do not support --mixed_precision fp16; use bf16.")
    key = (name, _tpu_address(config) if name == "tpu" else None)
    if key not in _STRATEGIES:
        _STRATEGIES[key] = _BUILDERS[name](config)
    return _STRATEGIES[key]


def describe_strategy(strategy: tf.distribute.Strategy) -> str:
    """One line: the strategy's kind, its replica count and devices (and, across machines, this worker's role)."""
    name = next((name for kind, name in _NAMES if isinstance(strategy, kind)), "default strategy")
    replicas = strategy.num_replicas_in_sync
    text = f"{name}, {replicas} replica{'s' if replicas != 1 else ''}"
    devices = ", ".join(_devices(strategy))
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        resolver = strategy.cluster_resolver
        role = f"{resolver.task_type} {resolver.task_id}{', the chief' if is_chief(strategy) else ''}"
        return f"{text}; this worker ({role}) runs {devices}"
    return f"{text} on {devices}"


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run's outputs: always, except on the non-chief workers of a multi-worker
    run (the chief is task `chief`, or worker 0 when the cluster has no `chief`)."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    resolver = strategy.cluster_resolver
    task_type, task_id = resolver.task_type, resolver.task_id
    return (task_type in (None, "chief") or
            (task_type == "worker" and task_id == 0 and "chief" not in resolver.cluster_spec().as_dict()))


@contextlib.contextmanager
def worker_scratch_dir(output_dir: str, resume_entries: Sequence[str]) -> Iterator[str]:
    """A temporary output folder for a non-chief worker, removed afterwards (TensorFlow's multi-worker guide).

    Non-chief workers must still save checkpoints and weights, as the collectives need every worker, but they
    write here. The scratch folder starts with copies of the chief's `resume_entries` (checkpoint state, results),
    so every worker resumes from the same epoch and weights.
    """
    scratch = tempfile.mkdtemp(prefix="tf-finetune-worker-")
    try:
        for entry in resume_entries:
            source = os.path.join(output_dir, entry)
            if os.path.isdir(source):
                shutil.copytree(source, os.path.join(scratch, entry))
            elif os.path.isfile(source):
                shutil.copy2(source, os.path.join(scratch, entry))
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@contextlib.contextmanager
def precision_policy(mixed_precision: str) -> Iterator[None]:
    """Set tf-keras' global mixed-precision policy for the layers built inside, then put the previous one back.

    Layers keep the policy they were built with, so only model creation needs to happen inside.
    """
    if mixed_precision not in POLICIES:
        yield
        return
    previous = tf_keras.mixed_precision.global_policy()
    tf_keras.mixed_precision.set_global_policy(POLICIES[mixed_precision])
    try:
        yield
    finally:
        tf_keras.mixed_precision.set_global_policy(previous)


def with_loss_scaling(optimizer: tf_keras.optimizers.Optimizer, mixed_precision: str) -> tf_keras.optimizers.Optimizer:
    """fp16 needs dynamic loss scaling so that small gradients do not underflow; bf16 and fp32 do not."""
    if mixed_precision == "fp16":
        return tf_keras.mixed_precision.LossScaleOptimizer(optimizer)
    return optimizer


def use_xla(jit_compile: bool, strategy: tf.distribute.Strategy) -> bool:
    """Whether to compile the training step with XLA: as asked, except where it cannot work.

    TPUs compile everything with XLA anyway. XLA cannot compile the all-gather of embedding (sparse) gradients
    between mirrored replicas (tf-keras issue 99), so multi-replica mirrored runs train without it.
    """
    if not jit_compile or needs_static_shapes(strategy):
        return False
    mirrored = (tf.distribute.MirroredStrategy, tf.distribute.MultiWorkerMirroredStrategy)
    if isinstance(strategy, mirrored) and strategy.num_replicas_in_sync > 1:
        logger.warning("--jit_compile is off: XLA cannot compile the embedding gradients' all-gather across "
                       "%d mirrored replicas (tf-keras issue 99).", strategy.num_replicas_in_sync)
        return False
    return True


def pad_multiple(config: "TrainConfig", xla: bool, strategy: tf.distribute.Strategy, max_length: int) -> Optional[int]:
    """The multiple batches are padded to: `--pad_to_multiple_of`, else 64 under XLA or on TPUs (a few shapes, so
    a few compilations), else none (pad to each batch's longest)."""
    multiple = config.pad_to_multiple_of
    if multiple is None and (xla or needs_static_shapes(strategy)):
        multiple = XLA_PAD_MULTIPLE
        if _round_up(config.max_seq_length, multiple) > max_length:
            multiple = config.max_seq_length  # every batch padded to max_seq_length: still one shape
    if multiple is not None and _round_up(config.max_seq_length, multiple) > max_length:
        raise UserError(f"--pad_to_multiple_of {multiple} pads --max_seq_length {config.max_seq_length} to "
                        f"{_round_up(config.max_seq_length, multiple)}, more than the model accepts ({max_length}); "
                        "pass a divisor of a smaller length.")
    return multiple


def needs_static_shapes(strategy: tf.distribute.Strategy) -> bool:
    """TPUs need fixed-shape input fed from tensors, not from Python (tensorflow issue 56258)."""
    return isinstance(strategy, tf.distribute.TPUStrategy)


def with_input_options(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Shard across workers by element (our datasets are not read from files, so FILE sharding cannot apply), and
    run without tf.data's autotuning thread: deleting an iterator waits for that thread, which stalled `fit` by
    about 10 s at the end of one epoch in three (MiniLM, 2,000 SST-2 sentences, 2 CPU cores)."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    options.autotune.enabled = False
    return dataset.with_options(options)


def static_shape_dataset(model: "TFPreTrainedModel", dataset: "Dataset", collate_fn: Callable[[list[dict]], dict],
                         batch_size: int, shuffle: bool, drop_remainder: bool, seed: int) -> tf.data.Dataset:
    """A split as `tf.data` built from tensors: every example collated once (one padded shape for the split), then
    sliced, shuffled and batched in TensorFlow, with no Python in the pipeline. `dataset` holds model columns only.

    Collating once fixes what the collator draws at random (e.g. masked-LM masks) for all epochs.
    """
    from transformers.modeling_tf_utils import find_labels

    columns = {name: _narrow(values) for name, values in collate_fn(dataset.to_list()).items()}
    labels = [name for name in find_labels(type(model)) if name in columns]
    features = {name: values for name, values in columns.items() if name not in labels}
    if not labels:
        elements: Any = features
    else:
        elements = (features, columns[labels[0]] if len(labels) == 1 else {name: columns[name] for name in labels})
    tf_dataset = tf.data.Dataset.from_tensor_slices(elements)
    if shuffle:
        tf_dataset = tf_dataset.shuffle(len(dataset), seed=seed, reshuffle_each_iteration=True)
    return tf_dataset.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)


def _narrow(values: Any) -> Any:
    """int64 token ids as int32: half the memory, and what TPUs prefer."""
    return values.astype("int32") if getattr(values, "dtype", None) == "int64" else values


def _round_up(length: int, multiple: int) -> int:
    return math.ceil(length / multiple) * multiple


def _split_cpu(count: Optional[str]) -> None:
    """Split the CPU into `count` logical devices (TF_FINETUNE_LOGICAL_CPUS, for tests without accelerators)."""
    if not count:
        return
    if not count.isdigit():
        raise UserError(f"{LOGICAL_CPUS_ENV} must be a number of logical CPUs, got {count!r}.")
    if int(count) <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    if len(tf.config.get_logical_device_configuration(cpu) or []) == int(count):
        return
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * int(count))
    except RuntimeError as error:
        raise UserError(f"{LOGICAL_CPUS_ENV}={count} must be set before TensorFlow starts: {error}") from error


def _cluster_size() -> int:
    """Number of workers (including a chief) that TF_CONFIG names; 0 without TF_CONFIG."""
    text = os.environ.get("TF_CONFIG")
    if not text:
        return 0
    try:
        cluster = json.loads(text).get("cluster", {})
    except (json.JSONDecodeError, AttributeError) as error:
        raise UserError(f"TF_CONFIG is not a JSON object with a 'cluster' ({error}); see "
                        "https://www.tensorflow.org/guide/distributed_training#setting_up_the_tf_config_environment_variable")
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def _tpu_hinted() -> bool:
    """Whether a TPU should be there: Colab / Cloud TPU variables, or Google TPU chips on the PCI bus (TPU VMs)."""
    if os.environ.get("COLAB_TPU_ADDR") or os.environ.get("TPU_NAME"):
        return True
    for device in glob.glob("/sys/bus/pci/devices/*"):
        try:
            with open(os.path.join(device, "vendor")) as vendor, open(os.path.join(device, "device")) as model:
                if vendor.read().strip() == _GOOGLE_PCI_VENDOR and model.read().strip() in _TPU_PCI_DEVICES:
                    return True
        except OSError:
            continue
    return False


def _tpu_address(config: "TrainConfig") -> str:
    """`--tpu`, else an old-style Colab TPU node's address, else `TPU_NAME`, else the TPU VM this runs on."""
    if config.tpu:
        return config.tpu
    if os.environ.get("COLAB_TPU_ADDR"):
        return "grpc://" + os.environ["COLAB_TPU_ADDR"]
    return os.environ.get("TPU_NAME") or "local"


def _tpu(config: "TrainConfig") -> tf.distribute.Strategy:
    address = _tpu_address(config)
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=address)
        if address != "local":
            tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(f"--strategy tpu: no TPU reachable at '{address}' ({reason}). On a TPU VM (Colab) install "
                        "tensorflow-tpu; elsewhere pass --tpu NAME_OR_ADDRESS, or choose another --strategy.") from error
    return tf.distribute.TPUStrategy(resolver)


def _multi_worker(config: "TrainConfig") -> tf.distribute.Strategy:
    if _cluster_size() < 1:
        raise UserError("--strategy multi_worker needs TF_CONFIG naming the cluster and this worker's task; see "
                        "https://www.tensorflow.org/guide/distributed_training#setting_up_the_tf_config_environment_variable")
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except (ValueError, RuntimeError) as error:
        raise UserError(f"--strategy multi_worker: {str(error).splitlines()[0]}") from error


def _mirrored(config: "TrainConfig") -> tf.distribute.Strategy:
    """All local GPUs; without GPUs, all logical CPUs (one, unless TF_FINETUNE_LOGICAL_CPUS splits it)."""
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy([device.name for device in devices])


def _gpu(config: "TrainConfig") -> tf.distribute.Strategy:
    if not tf.config.list_physical_devices("GPU"):
        raise UserError("--strategy gpu: TensorFlow sees no GPU (check the CUDA install and CUDA_VISIBLE_DEVICES), "
                        "or choose --strategy cpu.")
    return tf.distribute.OneDeviceStrategy("/gpu:0")


def _cpu(config: "TrainConfig") -> tf.distribute.Strategy:
    return tf.distribute.OneDeviceStrategy("/cpu:0")


def _devices(strategy: tf.distribute.Strategy) -> list[str]:
    try:
        devices = list(strategy.extended.worker_devices)
    except RuntimeError:  # the default strategy places ops wherever TensorFlow does: the first GPU, else the CPU
        devices = [(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU"))[0].name]
    return [device.split("device:")[-1] for device in devices]


_NAMES = ((tf.distribute.TPUStrategy, "TPUStrategy"),
          (tf.distribute.MultiWorkerMirroredStrategy, "MultiWorkerMirroredStrategy"),
          (tf.distribute.MirroredStrategy, "MirroredStrategy"), (tf.distribute.OneDeviceStrategy, "OneDeviceStrategy"))
_BUILDERS: dict[str, Callable[["TrainConfig"], tf.distribute.Strategy]] = {
    "cpu": _cpu, "gpu": _gpu, "mirrored": _mirrored, "multi_worker": _multi_worker, "tpu": _tpu}
_STRATEGIES: dict[tuple[str, Optional[str]], tf.distribute.Strategy] = {}
