"""The run folder's layout: every file a run writes is named by it, and --overwrite_output_dir and Hub uploads obey it."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from huggingface_hub.utils import filter_repo_objects

from conftest import write_sentiment_files
from tf_finetune.config import TrainConfig
from tf_finetune.core import layout
from tf_finetune.hub.client import IGNORE_PATTERNS
from tf_finetune.training import train
from tf_finetune.training.resume import remove_previous_run


def example_name(entry: layout.Entry) -> str:
    """A name the entry's pattern matches (predict_results_* -> predict_results_x)."""
    return entry.pattern.replace("*", "x")


def plant(folder: Path, entries) -> None:
    """A stale file for each entry: the entry itself, or a file inside the folder it names."""
    for entry in entries:
        path = folder / example_name(entry) / "stale.txt" if entry.folder else folder / example_name(entry)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("stale")


def test_each_entry_is_found_by_its_own_example_name():
    for entry in layout.ENTRIES:
        assert layout.entry_of(example_name(entry)) == entry, entry
    assert layout.entry_of("notes.txt") is None


def test_remove_previous_run_removes_every_output_and_keeps_the_rest(tmp_path):
    plant(tmp_path, layout.ENTRIES)
    (tmp_path / "notes.txt").write_text("the user's own")
    remove_previous_run(str(tmp_path))
    left = sorted(os.listdir(tmp_path))
    assert left == sorted(["notes.txt", *(example_name(e) for e in layout.ENTRIES if not e.overwritten)])


def test_uploads_leave_out_what_the_layout_keeps_home(tmp_path):
    names = {entry: (f"{example_name(entry)}/stale.txt" if entry.folder else example_name(entry))
             for entry in layout.ENTRIES}
    nested = ["pytorch/.tmp-model.safetensors", "adapter/.old-adapter/x.bin"]
    kept = set(filter_repo_objects([*names.values(), *nested], ignore_patterns=IGNORE_PATTERNS))
    assert kept == {name for entry, name in names.items() if entry.uploaded}


@pytest.fixture(scope="module")
def finished_run(tiny_bert, tmp_path_factory) -> tuple[TrainConfig, Path]:
    """A real tiny run writing as many kinds of output as one run can: LoRA adapter, PyTorch export, predictions,
    TensorBoard logs, report, model card."""
    folder = tmp_path_factory.mktemp("layout")
    paths = write_sentiment_files(folder, {"train": 32, "valid": 16, "test": 8})
    config = TrainConfig(task="text-classification", model_name_or_path=str(tiny_bert), train_file=paths["train"],
                         validation_file=paths["valid"], test_file=paths["test"], do_predict=True,
                         output_dir=str(folder / "out"), num_train_epochs=1, per_device_train_batch_size=8,
                         verbose=0, report_to=["tensorboard"], hub_export="pytorch", lora_rank=4)
    train(config)
    return config, Path(config.output_dir)


def test_every_file_a_run_writes_is_in_the_layout(finished_run):
    _, out = finished_run
    written = sorted(os.listdir(out))
    assert {layout.ADAPTER_DIR, layout.PYTORCH_DIR, layout.CHECKPOINT_DIR, layout.TENSORBOARD_DIR,
            layout.RESULTS_FILE, layout.predictions_file("text-classification", "txt")} <= set(written), written
    assert [name for name in written if layout.entry_of(name) is None] == []


def test_overwrite_output_dir_leaves_no_earlier_output(finished_run):
    """An overwriting run that writes less (no export, no predictions) leaves nothing stale of any output."""
    config, out = finished_run
    outputs = [entry for entry in layout.ENTRIES if entry.overwritten]
    plant(out, outputs)
    train(config.replace(overwrite_output_dir=True, do_predict=False, hub_export="none", lora_rank=0))
    stale = [str(path.relative_to(out)) for path in out.rglob("*")
             if path.is_file() and path.read_bytes() == b"stale" and layout.entry_of(path.relative_to(out).parts[0])
             in outputs]
    assert stale == []
    assert not (out / layout.PYTORCH_DIR).exists() and not (out / layout.ADAPTER_DIR).exists()
    assert not list(out.glob(layout.PREDICTIONS_PREFIX + "*"))
