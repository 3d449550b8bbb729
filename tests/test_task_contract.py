"""The task contract, checked on every registered task with a tiny model and its case from tests/task_fixtures/:
one training step changes the weights, only model columns reach the collator and the model on both input paths,
evaluation returns the task's declared keys, predictions are written, the saved model reloads with the task's Auto
class and the predict command answers with it."""
from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
import transformers

from task_fixtures import CASES, TinyModels
from tf_finetune.batching import example_lengths
from tf_finetune.distribute import static_shape_dataset
from tf_finetune.tasks import describe_tasks, list_tasks
from tf_finetune.training import FineTuneRun, model_columns
from tf_finetune.predict import main as predict_main

PAD_MULTIPLE = 8


@pytest.fixture(scope="module")
def models(tiny_bert, tiny_gpt2) -> TinyModels:
    return TinyModels(bert=tiny_bert, gpt2=tiny_gpt2)


def _inputs(batch):
    return batch[0] if isinstance(batch, tuple) else batch


@pytest.mark.parametrize("name", list_tasks())
def test_task_meets_the_contract(name, models, tmp_path, capsys):
    assert name in CASES, f"task {name!r} has no conformance case: add one to tests/task_fixtures/"
    (tmp_path / "data").mkdir()
    case = CASES[name](models, tmp_path / "data")
    config = case.config.replace(output_dir=str(tmp_path / "out"), num_train_epochs=1, per_device_train_batch_size=4,
                                 per_device_eval_batch_size=8, learning_rate=1e-2, pad_to_multiple_of=PAD_MULTIPLE,
                                 verbose=0)
    run = FineTuneRun(config)
    accepted = set(inspect.signature(run.model.call).parameters)

    batch = next(iter(run.train_dataset))
    assert set(_inputs(batch)) <= accepted, "a bookkeeping column reached the model"
    assert _inputs(batch)["input_ids"].shape[-1] % PAD_MULTIPLE == 0
    run.compile()
    before = [weight.numpy().copy() for weight in run.model.trainable_weights]
    run.model.train_on_batch(*(batch if isinstance(batch, tuple) else (batch,)))
    assert any(not np.array_equal(old, weight.numpy()) for old, weight in zip(before, run.model.trainable_weights))

    static = static_shape_dataset(run.model, model_columns(run.model, run.splits["train"].features),
                                  run.task.collator(run.tokenizer, run.config, training=True), batch_size=4,
                                  shuffle=False, drop_remainder=True, seed=0)
    static_batch = next(iter(static))
    assert set(_inputs(static_batch)) <= accepted
    run.model(_inputs(static_batch), training=False)

    lengths = example_lengths(run.splits["validation"].features)
    assert (lengths[:-1] >= lengths[1:]).all(), "evaluation runs longest first"
    results = run.evaluate()
    declared = run.task.result_keys(run.config, run.model_config)
    assert set(declared) <= set(results) and run.monitor in declared
    assert all(np.isfinite(results[key]) for key in declared), results

    if config.do_predict:
        written = Path(run.write_predictions())
        assert written.parent == Path(config.output_dir) and written.read_text().strip()
    run.save()
    reloaded = getattr(transformers, run.task.auto_model_class).from_pretrained(config.output_dir)
    features = _inputs(next(iter(run.eval_dataset)))
    np.testing.assert_allclose(reloaded(features, training=False).to_tuple()[0],
                               run.model(features, training=False).to_tuple()[0], rtol=1e-5, atol=1e-5)

    capsys.readouterr()
    assert predict_main(["--model", config.output_dir, *case.predict_args]) == 0
    assert capsys.readouterr().out.strip()


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

    from tf_finetune.tasks.base import model_function

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
