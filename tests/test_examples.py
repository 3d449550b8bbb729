"""The notebooks under examples/ execute (quickstart) or are valid notebooks (those that need hardware we lack)."""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.slow
def test_quickstart_notebook_runs(shared_data, minilm_path, tmp_path, monkeypatch):
    monkeypatch.setenv("GLUE_DIR", str(shared_data / "glue"))
    monkeypatch.setenv("OUTPUT_DIR", str(tmp_path / "sst2"))
    monkeypatch.setenv("MAX_TRAIN_SAMPLES", "64")
    monkeypatch.setenv("MAX_EVAL_SAMPLES", "32")
    notebook = nbformat.read(EXAMPLES / "quickstart.ipynb", as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = "".join(str(output) for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs)
    assert "eval_accuracy" in outputs and (tmp_path / "sst2" / "tf_model.h5").is_file()


@pytest.mark.slow
def test_features_baseline_notebook_runs(shared_data, minilm_path, tmp_path, monkeypatch):
    monkeypatch.setenv("GLUE_DIR", str(shared_data / "glue"))
    monkeypatch.setenv("OUTPUT_DIR", str(tmp_path / "sst2"))
    monkeypatch.setenv("MAX_TRAIN_SAMPLES", "200")
    monkeypatch.setenv("MAX_EVAL_SAMPLES", "100")
    notebook = nbformat.read(EXAMPLES / "features_baseline.ipynb", as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = "".join(str(output) for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs)
    assert "attention mask: [1 1" in outputs and "(200, 384)" in outputs
    assert "features baseline" in outputs and "fine-tuned" in outputs


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.ipynb")), ids=lambda p: p.name)
def test_notebooks_are_valid(path):
    nbformat.validate(nbformat.read(path, as_version=4))
