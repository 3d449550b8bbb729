"""The task contract, a base (`TaskContract`) that runs once per `Task` class (on its first registered instance: the
GLUE tasks share one class) and on a tokenizer-free fixture task, each with a tiny model and its case from
tests/task_fixtures/: one training step changes the weights, only the columns the task declares reach the collator and
only model inputs the model on both input paths, evaluation returns the task's declared keys (final-only keys only at
the end), predictions are written, the saved model and preprocessor reload and the predict command answers with
them."""
from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import pytest
import transformers

from task_fixtures import CASES, TinyModels, image_classification
from tf_finetune.data.batching import example_lengths
from tf_finetune.runtime.distribute import static_shape_dataset
from tf_finetune.tasks import describe_tasks, field_applies, get_task, list_tasks, registered
from tf_finetune.training import FineTuneRun, train
from tf_finetune.training.run import model_columns
from tf_finetune.predict import main as predict_main

PAD_MULTIPLE = 8


@pytest.fixture(scope="module")
def models(tiny_bert, tiny_gpt2) -> TinyModels:
    return TinyModels(bert=tiny_bert, gpt2=tiny_gpt2)


def _inputs(batch):
    return batch[0] if isinstance(batch, tuple) else batch


def _config(name: str, models: TinyModels, tmp_path: Path):
    (tmp_path / "data").mkdir()
    case = CASES[name](models, tmp_path / "data")
    config = case.config.replace(output_dir=str(tmp_path / "out"), num_train_epochs=1, per_device_train_batch_size=4,
                                 per_device_eval_batch_size=8, learning_rate=1e-2, pad_to_multiple_of=PAD_MULTIPLE,
                                 verbose=0)
    return config, case.predict_args


class TaskContract:
    """The contract's checks on the registered task `task_name`."""

    task_name: str

    def test_task_meets_the_contract(self, models, tmp_path, capsys):
        config, predict_args = _config(self.task_name, models, tmp_path)
        run = FineTuneRun(config)
        accepted = set(inspect.signature(run.model.call).parameters)
        length_column = run.task.length_column

        batch = next(iter(run.train_dataset))
        assert set(_inputs(batch)) <= accepted, "a bookkeeping column reached the model"
        if length_column:
            assert _inputs(batch)[length_column].shape[-1] % PAD_MULTIPLE == 0
        run.compile()
        before = [weight.numpy().copy() for weight in run.model.trainable_weights]
        run.model.train_on_batch(*(batch if isinstance(batch, tuple) else (batch,)))
        assert any(not np.array_equal(old, weight.numpy()) for old, weight in zip(before, run.model.trainable_weights))

        static = static_shape_dataset(run.model, model_columns(run.model, run.splits["train"].features,
                                                               run.task.collator_columns),
                                      run.task.collator(run.preprocessor, run.config, training=True), batch_size=4,
                                      shuffle=False, drop_remainder=True, seed=0)
        static_batch = next(iter(static))
        assert set(_inputs(static_batch)) <= accepted
        run.model(_inputs(static_batch), training=False)

        if length_column:
            lengths = example_lengths(run.splits["validation"].features, length_column)
            assert (lengths[:-1] >= lengths[1:]).all(), "evaluation runs longest first"
        results = run.evaluate()
        declared = run.task.result_keys(run.config, run.model_config)
        final_only = run.task.final_result_keys(run.config, run.model_config)
        assert set(declared) <= set(results) and run.monitor in declared
        assert all(np.isfinite(results[key]) for key in declared), results
        assert not set(final_only) & set(results), "final-only results are computed every epoch"
        final, _ = run.final_evaluation()
        assert set(declared + final_only) <= set(final)

        if config.do_predict:
            written = Path(run.write_predictions())
            assert written.parent == Path(config.output_dir) and written.read_text().strip()
        run.save()
        reloaded = getattr(transformers, run.task.auto_model_class).from_pretrained(config.output_dir)
        features = _inputs(next(iter(run.eval_dataset)))
        np.testing.assert_allclose(reloaded(features, training=False).to_tuple()[0],
                                   run.model(features, training=False).to_tuple()[0], rtol=1e-5, atol=1e-5)
        assert type(run.task.load_preprocessor(config.output_dir)) is type(run.preprocessor)

        capsys.readouterr()
        assert predict_main(["--model", config.output_dir, *predict_args]) == 0
        assert capsys.readouterr().out.strip()


def _one_task_per_class() -> dict[type, str]:
    """The first registered task of each Task class (instances of one class share all their code)."""
    names: dict[type, str] = {}
    for name in list_tasks():
        names.setdefault(type(get_task(name)), name)
    return names


for _task_class, _name in _one_task_per_class().items():
    globals()[f"Test{_task_class.__name__}"] = type(f"Test{_task_class.__name__}", (TaskContract,),
                                                    {"task_name": _name})


def test_every_registered_task_has_a_conformance_case():
    missing = [name for name in list_tasks() if name not in CASES]
    assert not missing, f"tasks without a conformance case (add one to tests/task_fixtures/): {missing}"


class TestImageClassificationFixture(TaskContract):
    """A tokenizer-free task (an image processor, no length column, a raw column augmented by its collator)."""

    task_name = image_classification.NAME

    @pytest.fixture(autouse=True)
    def _registered(self):
        with registered(image_classification.ImageClassificationTask()):
            yield

    def test_final_only_results_are_computed_when_training_ends_and_every_nth_epoch(self, models, tmp_path,
                                                                                    monkeypatch):
        calls = []
        final_results = image_classification.ImageClassificationTask.final_results
        monkeypatch.setattr(image_classification.ImageClassificationTask, "final_results",
                            lambda *args: calls.append(1) or final_results(*args))
        config, _ = _config(self.task_name, models, tmp_path)
        results = train(config.replace(num_train_epochs=3, do_predict=False))
        output_dir = Path(config.output_dir)
        history = json.loads((output_dir / "history.json").read_text())
        assert len(history) == 3 and all("eval_accuracy" in row for row in history)
        assert ["eval_mean_confidence" in row for row in history] == [False, True, False]  # final_results_every 2
        assert 0 < json.loads((output_dir / "all_results.json").read_text())["eval_mean_confidence"] <= 1
        assert results["eval_mean_confidence"] and len(calls) == 2

    def test_its_option_fields_are_its_own(self):
        assert not field_applies("max_seq_length", {"task": self.task_name})  # the text tasks' option, not its
        assert field_applies("max_seq_length", {"task": "sst2"}) and field_applies("learning_rate",
                                                                                 {"task": self.task_name})
        assert field_applies("packing", {"task": "chat"}) and not field_applies("packing", {"task": self.task_name})

    def test_the_best_epoch_is_not_chosen_on_a_final_only_result(self, models, tmp_path):
        from tf_finetune.core.errors import UserError

        config, _ = _config(self.task_name, models, tmp_path)
        with pytest.raises(UserError, match="computed only when training ends"):
            FineTuneRun(config.replace(metric_for_best_model="mean_confidence"))


def test_list_tasks_describes_every_task(capsys):
    from tf_finetune.train import main

    assert main(["--list_tasks"]) == 0
    printed = capsys.readouterr().out
    assert printed.strip() == describe_tasks()
    for name in list_tasks():
        assert f"\n{name}\n" in f"\n{printed}", name
    assert printed.count("  data: ") == printed.count("  metrics: ") == len(list_tasks())


def test_task_help_lists_the_registered_tasks(capsys):
    from tf_finetune.train import main

    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"Task name: {', '.join(list_tasks())}" in help_text


def test_model_functions_are_built_once_per_model_and_name_and_do_not_keep_the_model_alive():
    import gc
    import weakref

    from tf_finetune.models.functions import model_function

    class Model:
        pass

    model, built = Model(), []

    def build(model_ref):
        built.append(model_ref)
        return lambda: model_ref()

    step = model_function(model, "logits", build)
    assert model_function(model, "logits", build) is step and len(built) == 1 and step() is model
    assert model_function(model, "loss", build) is not step and len(built) == 2
    alive = weakref.ref(model)
    del model, step
    gc.collect()
    assert alive() is None
