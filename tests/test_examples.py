"""The notebooks under examples/ execute: quickstart and features_baseline as they are, colab_tpu but for its
TPU-only steps (this machine has no TPU)."""
from __future__ import annotations

import json
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


@pytest.mark.slow
def test_colab_tpu_notebook_runs_here_but_for_its_tpu_steps(shared_data, minilm_path, tmp_path):
    """The install cell is left out (it needs Colab: pip from the network and tensorflow-tpu's libtpu); the TPU
    check runs as it is and must stop with the no-TPU error; training runs with --strategy cpu on a short local
    SST-2 instead of the TPU and the Hub's copy; the results cell reads what it wrote."""
    notebook = nbformat.read(EXAMPLES / "colab_tpu.ipynb", as_version=4)
    install, check, training, results = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert "!pip install" in install.source and training.source.count("--strategy tpu") == 1
    notebook.cells.remove(install)
    training.source = training.source.replace(
        "--strategy tpu", f"--strategy cpu --data_dir {shared_data / 'glue'} --max_train_samples 64 "
                          "--max_eval_samples 32")
    NotebookClient(notebook, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()

    def printed(cell) -> str:
        return "".join(output.get("text", "") + str(output.get("data", "")) for output in cell.outputs)

    assert "UserError: --strategy tpu: no TPU reachable at 'local'" in printed(check)
    assert "Done in " in printed(training)
    shown = json.loads(printed(results))
    assert shown == json.loads((tmp_path / "sst2-tpu" / "all_results.json").read_text())
    assert shown["train_samples"] == 64 and shown["eval_samples"] == 32 and "eval_accuracy" in shown


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.ipynb")), ids=lambda p: p.name)
def test_notebooks_are_valid(path):
    nbformat.validate(nbformat.read(path, as_version=4))
