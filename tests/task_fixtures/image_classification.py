"""A tokenizer-free task, for tests only: image classification with a ViT image processor, which shows that the
task contract assumes no text. Tests register it (`registered_image_task`); nothing in tf_finetune names it.

Its data are JSON lines of {"image": [height][width][3] pixel values, "label": name}. Features keep the raw image
beside its pixel values: the training collator flips images at random and preprocesses them again (the raw column
reaches it through `collator_columns`), and batches have no length to sort by (`length_column` None). Its final-only
result, eval_mean_confidence, is computed when training ends and after every second epoch, not after each.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

import datasets
import numpy as np
import tensorflow as tf

from task_fixtures import Case, TinyModels
from tf_finetune.config import TrainConfig
from tf_finetune.tasks.base import RunContext, Task, TaskSplit, read_text_inputs

NAME = "image-fixture"
LABELS = ("dark", "bright")
IMAGE_SIZE = 8


class ImageClassificationTask(Task):
    name = NAME
    auto_model_class = "TFAutoModelForImageClassification"
    pipeline_tag = "image-classification"
    description = "Image classification (a test fixture)."
    data_formats = ".jsonl with image and label"
    reported_metrics = "eval_loss, eval_accuracy; at the end eval_mean_confidence"
    option_fields = ()  # no --max_seq_length: images are not truncated
    length_column = None
    collator_columns = ("image",)
    final_results_every = 2

    def load_preprocessor(self, name_or_path: str) -> Any:
        from transformers import ViTImageProcessor

        return ViTImageProcessor.from_pretrained(name_or_path)

    def check_preprocessor(self, preprocessor: Any, model_config: Any, config: TrainConfig) -> int:
        return sys.maxsize  # images have no sequence length to limit

    def load_raw_datasets(self, config: TrainConfig) -> datasets.DatasetDict:
        files = {"train": config.train_file, "validation": config.validation_file, "test": config.test_file}
        return datasets.DatasetDict({split: datasets.Dataset.from_json(path) for split, path in files.items() if path})

    def model_config_kwargs(self, raw_datasets: datasets.DatasetDict, config: TrainConfig) -> dict[str, Any]:
        return {"num_labels": len(LABELS), "id2label": dict(enumerate(LABELS)),
                "label2id": {label: i for i, label in enumerate(LABELS)}}

    def tokenize(self, raw_datasets: datasets.DatasetDict, preprocessor: Any,
                 config: TrainConfig) -> dict[str, TaskSplit]:
        def encode(batch: dict[str, list]) -> dict[str, Any]:
            encoded = {"pixel_values": pixel_values(preprocessor, batch["image"])}
            if "label" in batch:
                encoded["labels"] = [LABELS.index(label) for label in batch["label"]]
            return encoded

        splits = {}
        for split, raw in raw_datasets.items():
            features = raw.map(encode, batched=True, remove_columns=[c for c in raw.column_names if c != "image"])
            splits[split] = TaskSplit(raw, features)
        return splits

    def collator(self, preprocessor: Any, config: TrainConfig, training: bool) -> Callable[[list[dict]], dict]:
        def collate(rows: list[dict]) -> dict[str, np.ndarray]:
            if training:  # augmentation from the raw images: a random horizontal flip each
                images = [np.asarray(row["image"])[:, ::-1] if np.random.rand() < 0.5 else row["image"]
                          for row in rows]
                values = pixel_values(preprocessor, images)
            else:
                values = np.stack([np.asarray(row["pixel_values"], np.float32) for row in rows])
            return {"pixel_values": values, "labels": np.asarray([row["labels"] for row in rows], np.int64)}

        return collate

    def main_metric(self, config: TrainConfig, model_config: Any) -> tuple[str, bool]:
        return "eval_accuracy", True

    def result_keys(self, config: TrainConfig, model_config: Any) -> list[str]:
        return ["eval_loss", "eval_accuracy"]

    def final_result_keys(self, config: TrainConfig, model_config: Any) -> list[str]:
        return ["eval_mean_confidence"]

    def evaluate(self, model: Any, tf_dataset: Any, split: TaskSplit, config: TrainConfig,
                 context: RunContext) -> dict[str, float]:
        logits = model.predict(tf_dataset, verbose=0).logits
        labels = np.asarray(split.features["labels"])
        loss = model.hf_compute_loss(tf.constant(labels), tf.constant(logits))
        return {"eval_loss": float(np.mean(loss)), "eval_accuracy": float(np.mean(logits.argmax(-1) == labels))}

    def final_results(self, model: Any, tf_dataset: Any, split: TaskSplit, config: TrainConfig,
                      context: RunContext) -> dict[str, float]:
        probabilities = tf.nn.softmax(model.predict(tf_dataset, verbose=0).logits).numpy()
        return {"eval_mean_confidence": float(probabilities.max(-1).mean())}

    def predict(self, model: Any, tf_dataset: Any, split: TaskSplit, config: TrainConfig,
                context: RunContext) -> list[str]:
        logits = model.predict(tf_dataset, verbose=0).logits
        return [context.model_config.id2label[int(i)] for i in logits.argmax(-1)]

    def add_predict_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--top_k", type=int, default=2, help="image-classification: labels shown per image.")

    def predict_inputs(self, args: argparse.Namespace, preprocessor: Any) -> list[Any]:
        return [np.load(path) for path in read_text_inputs(args.texts, args.file)]

    def predict_lines(self, model: Any, preprocessor: Any, inputs: list[Any], args: argparse.Namespace) -> list[str]:
        probabilities = tf.nn.softmax(model(pixel_values=pixel_values(preprocessor, inputs)).logits).numpy()
        lines = []
        for row in probabilities:
            lines += [f"  {model.config.id2label[int(i)]}\t{row[i]:.4f}" for i in np.argsort(-row)[:args.top_k]]
        return lines


def pixel_values(preprocessor: Any, images: list) -> np.ndarray:
    return preprocessor(images=[np.asarray(image, np.uint8) for image in images], return_tensors="np")["pixel_values"]


def write_images(path: Path, count: int, seed: int) -> None:
    """JSON lines of random images, bright ones labelled bright."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        label = LABELS[i % 2]
        low = 128 if label == "bright" else 0
        rows.append({"image": rng.integers(low, low + 128, (IMAGE_SIZE, IMAGE_SIZE, 3)).tolist(), "label": label})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def tiny_vit(directory: Path) -> Path:
    """A tiny random ViT classifier and its image processor, built and saved locally (no download)."""
    import tf_finetune  # noqa: F401
    from transformers import TFViTForImageClassification, ViTConfig, ViTImageProcessor

    config = ViTConfig(image_size=IMAGE_SIZE, patch_size=4, num_channels=3, hidden_size=16, num_hidden_layers=1,
                       num_attention_heads=2, intermediate_size=32)
    model = TFViTForImageClassification(config)
    model(model.dummy_inputs)
    model.save_pretrained(directory)
    ViTImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(directory)
    return directory


def image_case(models: TinyModels, tmp_path: Path) -> Case:
    for split, count in (("train", 8), ("validation", 6), ("test", 3)):
        write_images(tmp_path / f"{split}.jsonl", count, seed=len(split))
    np.save(tmp_path / "query.npy", np.full((IMAGE_SIZE, IMAGE_SIZE, 3), 200, np.uint8))
    config = TrainConfig(task=NAME, model_name_or_path=str(tiny_vit(tmp_path / "vit")),
                         train_file=str(tmp_path / "train.jsonl"), validation_file=str(tmp_path / "validation.jsonl"),
                         test_file=str(tmp_path / "test.jsonl"), do_predict=True)
    return Case(config, ["--top_k", "1", str(tmp_path / "query.npy")])


CASES = {NAME: image_case}
