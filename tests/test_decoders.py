"""tf-finetune's TF classes for Llama, Qwen2, Qwen3, Gemma 2 and Gemma 3 (tf_finetune.models.decoders) against PyTorch
transformers, on tiny random checkpoints built here: logits, greedy generation with and without the KV cache and
under XLA, the sequence-classification head, and a model trained in TF, exported, and read back by PyTorch."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import transformers

from tf_finetune.models.loading import load_model, load_model_config
from tf_finetune.models.pytorch_weights import PytorchWeights
from tf_finetune.tasks import task_for_architectures

torch = pytest.importorskip("torch", reason="torch (CPU) is not installed")

TOLERANCE = 1e-4  # fp32, largest absolute logit difference
SMALL = {"vocab_size": 100, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64, "pad_token_id": 0,
         "bos_token_id": 1, "eos_token_id": None}
LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 16}
GEMMA = {"head_dim": 16, "sliding_window": 4, "query_pre_attn_scalar": 24, "layer_types": [
    "sliding_attention", "full_attention"], "attn_implementation": "eager"}  # eager: PyTorch's soft-capping path
# family -> variant: GQA everywhere (4 heads, 2 key/value heads); head_dim != hidden / heads where the family has
# the field; tied and untied embeddings; Llama 3's and linear rope scaling; every bias the families allow.
CASES = {
    "llama-llama3-rope-biases-head-dim": ("Llama", {"head_dim": 16, "attention_bias": True, "mlp_bias": True,
                                                    "rope_scaling": LLAMA3_ROPE, "tie_word_embeddings": False}),
    "llama-tied-linear-rope": ("Llama", {"tie_word_embeddings": True,
                                         "rope_scaling": {"rope_type": "linear", "factor": 2.0}}),
    "qwen2-tied": ("Qwen2", {"tie_word_embeddings": True}),
    "qwen2-untied": ("Qwen2", {"tie_word_embeddings": False}),
    "qwen3-head-dim": ("Qwen3", {"head_dim": 16, "tie_word_embeddings": False}),
    "qwen3-tied-attention-bias": ("Qwen3", {"tie_word_embeddings": True, "attention_bias": True}),
    # Gemma: a window of 4 over 12-token inputs, soft caps small enough to bend the scores and logits, a query scale
    # unequal to the head size; Gemma 3 with its own RoPE base on the sliding layer and linear scaling on the global
    "gemma2-tied-caps-window": ("Gemma2", {**GEMMA, "tie_word_embeddings": True, "attn_logit_softcapping": 2.0,
                                           "final_logit_softcapping": 3.0}),
    "gemma2-untied-caps": ("Gemma2", {**GEMMA, "tie_word_embeddings": False, "final_logit_softcapping": 3.0}),
    "gemma3-local-rope-window": ("Gemma3", {**GEMMA, "tie_word_embeddings": True, "rope_local_base_freq": 100.0,
                                            "rope_scaling": {"rope_type": "linear", "factor": 2.0}}),
}
XLA_CASES = ("llama-llama3-rope-biases-head-dim", "qwen2-tied", "qwen3-head-dim",  # one per family: XLA is slow
             "gemma2-tied-caps-window", "gemma3-local-rope-window")
CONFIGS = {"Gemma3": "Gemma3TextConfig"}  # PyTorch names where they differ from {stem}Config / {stem}For{head}
PYTORCH_CLASSES = {("Gemma3", "SequenceClassification"): "Gemma3TextForSequenceClassification"}
IDS = np.array([[1, 17, 5, 42, 9, 3, 77, 12, 8, 60, 23, 31], [1, 4, 90, 33, 2, 71, 6, 19, 44, 0, 0, 0]])
MASK = (np.arange(IDS.shape[1]) < np.array([[12], [9]])).astype(np.int64)  # the second row padded on the right


def _pytorch_model(stem: str, head: str, overrides: dict):
    """A tiny PyTorch model with every parameter random (biases and norms too, so none is trivially zero or one)."""
    torch.manual_seed(0)
    config = getattr(transformers, CONFIGS.get(stem, f"{stem}Config"))(**{**SMALL, **overrides})
    model = getattr(transformers, PYTORCH_CLASSES.get((stem, head), f"{stem}For{head}"))(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            parameter.copy_(torch.randn_like(parameter) * (0.1 if "norm" in name else 0.2) + ("norm" in name))
    if config.tie_word_embeddings and head == "CausalLM":
        assert model.lm_head.weight is model.model.embed_tokens.weight
    return model


@pytest.fixture(params=list(CASES))
def checkpoint(request, tmp_path):
    """(case name, PyTorch model, its saved folder)."""
    stem, overrides = CASES[request.param]
    model = _pytorch_model(stem, "CausalLM", overrides)
    model.save_pretrained(tmp_path / "pt")
    return request.param, model, tmp_path / "pt"


def _pytorch_logits(model, ids=IDS, mask=MASK) -> np.ndarray:
    with torch.no_grad():
        return model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()


def _tf_model(directory, auto_class: str = "TFAutoModelForCausalLM", **overrides):
    return load_model(auto_class, str(directory), load_model_config(str(directory), **overrides))


def _max_difference(actual: np.ndarray, expected: np.ndarray, mask: np.ndarray = MASK) -> float:
    return float(np.abs(actual - expected)[mask.astype(bool)].max())


def test_logits_equal_pytorchs(checkpoint):
    name, pytorch, directory = checkpoint
    model = _tf_model(directory)
    assert type(model).__name__ == f"TF{CASES[name][0]}ForCausalLM"
    assert _max_difference(model(IDS, attention_mask=MASK).logits.numpy(), _pytorch_logits(pytorch)) < TOLERANCE


def test_greedy_generation_is_the_same_with_and_without_the_cache_and_as_pytorchs(checkpoint):
    import tensorflow as tf

    name, pytorch, directory = checkpoint
    model = _tf_model(directory)
    prompt = np.array([[0, 0, 1, 17, 5, 42], [1, 4, 90, 33, 2, 71]])  # left padding, as generation pads
    mask = (prompt != 0).astype(np.int64)
    settings = {"max_new_tokens": 20, "do_sample": False, "pad_token_id": 0, "eos_token_id": None}
    cached = model.generate(tf.constant(prompt), attention_mask=tf.constant(mask), use_cache=True, **settings)
    uncached = model.generate(tf.constant(prompt), attention_mask=tf.constant(mask), use_cache=False, **settings)
    with torch.no_grad():
        expected = pytorch.generate(torch.tensor(prompt), attention_mask=torch.tensor(mask), **settings).numpy()
    assert cached.shape == (2, 26)
    np.testing.assert_array_equal(cached.numpy(), uncached.numpy())
    np.testing.assert_array_equal(cached.numpy(), expected)
    if name in XLA_CASES:
        xla = tf.function(model.generate, jit_compile=True)
        np.testing.assert_array_equal(xla(tf.constant(prompt), attention_mask=tf.constant(mask), **settings).numpy(),
                                      expected)


def test_a_model_trained_in_tf_exports_to_its_pytorch_architecture(checkpoint, tmp_path):
    import tf_keras

    name, _, directory = checkpoint
    model = _tf_model(directory)
    before = model(IDS, attention_mask=MASK).logits.numpy()
    model.compile(optimizer=tf_keras.optimizers.Adam(1e-2))
    model.train_on_batch({"input_ids": IDS, "attention_mask": MASK, "labels": np.where(MASK == 1, IDS, -100)})
    trained = model(IDS, attention_mask=MASK).logits.numpy()
    assert _max_difference(trained, before) > 1e-2  # the step changed the model

    PytorchWeights(model).save_pretrained(str(tmp_path / "export"))
    exported = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "export", attn_implementation="eager")
    exported.eval()
    assert type(exported).__name__ == f"{CASES[name][0]}ForCausalLM"
    assert exported.config.tie_word_embeddings == CASES[name][1]["tie_word_embeddings"]
    assert _max_difference(_pytorch_logits(exported), trained) < TOLERANCE


@pytest.mark.parametrize("name", ["llama-tied-linear-rope", "gemma2-tied-caps-window"])  # plain and sandwich layers
def test_gradient_checkpointing_runs_each_layer_again_in_the_backward_pass_for_the_same_gradients(
        name, tmp_path, monkeypatch):
    import tensorflow as tf

    from tf_finetune.models.decoders.layers import TFDecoderLayer

    model = _tf_model(_saved(*CASES[name], tmp_path))
    batch = {"input_ids": tf.constant(IDS), "attention_mask": tf.constant(MASK),
             "labels": tf.constant(np.where(MASK == 1, IDS, -100))}
    runs = []
    layer = TFDecoderLayer._layer

    def counted(self, *args, **kwargs):
        runs.append(self.name)
        return layer(self, *args, **kwargs)

    monkeypatch.setattr(TFDecoderLayer, "_layer", counted)

    def tape_gradients():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(model(batch, training=True).loss)
        return [tf.convert_to_tensor(gradient) for gradient in tape.gradient(loss, model.trainable_variables)]

    def gradients(function=tape_gradients):
        return [gradient.numpy() for gradient in function()]

    kept = gradients()
    assert len(runs) == 2  # one run per layer
    model.gradient_checkpointing_enable()
    assert model.is_gradient_checkpointing
    runs.clear()
    recomputed = gradients()
    assert runs == ["layers.0", "layers.1", "layers.1", "layers.0"]  # forward, then each again in the backward pass
    traced = gradients(tf.function(tape_gradients))  # inside tf.function, as Keras' fit runs it
    assert all(gradient.any() for gradient in recomputed)
    for expected, eager, graph in zip(kept, recomputed, traced):
        np.testing.assert_allclose(eager, expected, atol=1e-6)
        np.testing.assert_allclose(graph, expected, atol=1e-5)
    model.gradient_checkpointing_disable()
    runs.clear()
    gradients()
    assert len(runs) == 2


def test_training_with_gradient_checkpointing_and_lora_has_the_losses_of_training_without(tiny_mistral, tmp_path,
                                                                                           monkeypatch):
    import tensorflow as tf

    from tf_finetune.config import TrainConfig
    from tf_finetune.training import train

    recomputed = []
    recompute_grad = tf.recompute_grad
    monkeypatch.setattr(tf, "recompute_grad", lambda function: recomputed.append(1) or recompute_grad(function))

    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_mistral)
    stem, overrides = CASES["qwen3-head-dim"]
    _pytorch_model(stem, "CausalLM", {**overrides, "vocab_size": len(tokenizer)}).save_pretrained(tmp_path / "pt")
    (tmp_path / "train.txt").write_text("".join(f"the cat sat on the mat {i}\n" for i in range(24)))
    results = {}
    for checkpointing in (False, True):
        output_dir = tmp_path / f"out-{checkpointing}"
        train(TrainConfig(task="clm", model_name_or_path=str(tmp_path / "pt"), tokenizer_name=str(tiny_mistral),
                          train_file=str(tmp_path / "train.txt"), validation_file=str(tmp_path / "train.txt"),
                          block_size=16, max_seq_length=64, output_dir=str(output_dir), num_train_epochs=1,
                          per_device_train_batch_size=4, learning_rate=1e-2, lora_rank=4, verbose=0,
                          gradient_checkpointing=checkpointing, report_to=["none"]))
        results[checkpointing] = json.loads((output_dir / "all_results.json").read_text())
        assert bool(recomputed) == checkpointing  # fit's training step ran the layers under tf.recompute_grad
    assert results[True]["eval_loss"] != results[True]["train_loss"]
    for key in ("train_loss", "eval_loss"):
        assert results[True][key] == pytest.approx(results[False][key], abs=1e-5)


@pytest.mark.parametrize("stored", ["float16", "bfloat16"])
def test_checkpoints_stored_in_half_precision_load_as_float32_with_pytorchs_logits(stored, tmp_path):
    stem, overrides = CASES["qwen2-tied"]
    _pytorch_model(stem, "CausalLM", overrides).to(getattr(torch, stored)).save_pretrained(tmp_path / "pt")
    pytorch = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "pt", torch_dtype=torch.float32).eval()
    model = _tf_model(tmp_path / "pt")
    assert {variable.dtype.name for variable in model.variables} == {"float32"}
    assert _max_difference(model(IDS, attention_mask=MASK).logits.numpy(), _pytorch_logits(pytorch)) < TOLERANCE


@pytest.mark.parametrize("name", XLA_CASES)  # one per family
def test_bf16_mixed_precision_computes_pytorchs_logits_to_bf16_precision_and_trains(name, tmp_path):
    import copy

    import tf_keras

    from tf_finetune.runtime.distribute import precision_policy

    pytorch = _pytorch_model(*CASES[name][:1], "CausalLM", CASES[name][1])
    pytorch.save_pretrained(tmp_path / "pt")
    with precision_policy("bf16"):
        model = _tf_model(tmp_path / "pt")
        logits = model(IDS, attention_mask=MASK).logits
        assert model.model.layers[0].compute_dtype == "bfloat16" and logits.dtype == "float32"
        assert {variable.dtype.name for variable in model.variables} == {"float32"}
        expected, ids, mask = _pytorch_logits(pytorch), torch.tensor(IDS), torch.tensor(MASK)
        # PyTorch's own bf16 errors are the measure: under autocast (its residual stream stays float32) and with
        # every weight and activation in bf16 (as Keras' mixed policy keeps the activations)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = pytorch(input_ids=ids, attention_mask=mask).logits.float().numpy()
        with torch.no_grad():
            pure = copy.deepcopy(pytorch).to(torch.bfloat16)(input_ids=ids, attention_mask=mask).logits.float().numpy()
        pytorch_error = max(_max_difference(autocast, expected), _max_difference(pure, expected))
        assert 1e-4 < _max_difference(logits.numpy(), expected) < 2 * pytorch_error
        model.compile(optimizer=tf_keras.optimizers.Adam(1e-2))
        loss = model.train_on_batch({"input_ids": IDS, "attention_mask": MASK,
                                     "labels": np.where(MASK == 1, IDS, -100)})
    assert np.isfinite(loss) and _max_difference(model(IDS, attention_mask=MASK).logits.numpy(), logits.numpy()) > 1e-2


def test_gradient_checkpointing_is_refused_where_a_layer_draws_dropout(tmp_path):
    from tf_finetune.core.errors import UserError
    from tf_finetune.models.loading import check_gradient_checkpointing

    stem, overrides = CASES["qwen2-tied"]
    config = load_model_config(str(_saved(stem, {**overrides, "attention_dropout": 0.1}, tmp_path)))
    with pytest.raises(UserError, match="has attention_dropout=0.1"):
        check_gradient_checkpointing("TFAutoModelForCausalLM", "tiny", config)
    check_gradient_checkpointing("TFAutoModelForCausalLM", "tiny", load_model_config(str(tmp_path / "pt"),
                                                                                     attention_dropout=0.0))


TRANSFORMERS_5_PYTHON = os.environ.get("TF_FINETUNE_TRANSFORMERS_5_PYTHON")  # .ci/run makes one
V5_LOGITS = """
import sys, numpy as np, torch, transformers
assert transformers.__version__.startswith("5."), transformers.__version__
ids, mask = np.load(sys.argv[1]), np.load(sys.argv[2])
for folder in sys.argv[3:]:
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.float().numpy()
    np.save(folder + "/v5_logits.npy", logits)
    print(folder, type(model).__name__)
"""


@pytest.mark.skipif(not TRANSFORMERS_5_PYTHON, reason="TF_FINETUNE_TRANSFORMERS_5_PYTHON names no Python with "
                    "transformers 5 (.ci/run makes one: a venv over this one's packages with transformers>=5)")
def test_the_pytorch_export_loads_in_transformers_5_with_the_same_logits(tmp_path):
    folders, logits = [], {}
    for name in XLA_CASES:  # one per family
        model = _tf_model(_saved(*CASES[name], tmp_path / name))
        PytorchWeights(model).save_pretrained(str(tmp_path / name / "export"))
        folders.append(str(tmp_path / name / "export"))
        logits[folders[-1]] = model(IDS, attention_mask=MASK).logits.numpy()
    np.save(tmp_path / "ids.npy", IDS)
    np.save(tmp_path / "mask.npy", MASK)
    result = subprocess.run([TRANSFORMERS_5_PYTHON, "-c", V5_LOGITS, str(tmp_path / "ids.npy"),
                             str(tmp_path / "mask.npy"), *folders], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [line.split()[1] for line in result.stdout.splitlines()] == [
        f"{CASES[name][0]}ForCausalLM" for name in XLA_CASES]
    for folder, expected in logits.items():
        assert _max_difference(np.load(f"{folder}/v5_logits.npy"), expected) < TOLERANCE


@pytest.mark.parametrize("name", ["llama-llama3-rope-biases-head-dim", "qwen2-untied", "qwen3-tied-attention-bias",
                                  "gemma2-untied-caps", "gemma3-local-rope-window"])
def test_sequence_classification_scores_equal_pytorchs(name, tmp_path):
    stem, overrides = CASES[name]
    pytorch = _pytorch_model(stem, "SequenceClassification", {**overrides, "num_labels": 3})
    pytorch.save_pretrained(tmp_path)
    model = _tf_model(tmp_path, "TFAutoModelForSequenceClassification", num_labels=3)
    assert type(model).__name__ == "TF" + PYTORCH_CLASSES.get((stem, "SequenceClassification"),
                                                              f"{stem}ForSequenceClassification")
    with torch.no_grad():
        expected = pytorch(input_ids=torch.tensor(IDS), attention_mask=torch.tensor(MASK)).logits.numpy()
    np.testing.assert_allclose(model(IDS, attention_mask=MASK).logits.numpy(), expected, atol=TOLERANCE)


# transformers imports its TF Auto module either first or halfway through the import of a TF model module.
@pytest.mark.parametrize("first", ["from transformers import TFAutoModelForCausalLM",
                                   "import transformers.modeling_tf_utils", "from transformers import TFMistralModel",
                                   "from tf_finetune.models.decoders import TFQwen3ForCausalLM"])
def test_importing_tf_finetune_registers_the_classes_with_transformers_auto_classes(first, tmp_path):
    stem, overrides = CASES["qwen3-head-dim"]
    model = _tf_model(_saved(stem, overrides, tmp_path))
    model.save_pretrained(tmp_path / "tf")
    code = (f"import sys, tf_finetune; assert 'tensorflow' not in sys.modules; {first}; "
            "from transformers import TFAutoModelForCausalLM; "
            f"print(type(TFAutoModelForCausalLM.from_pretrained({str(tmp_path / 'tf')!r})).__name__)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "TFQwen3ForCausalLM"


def test_predict_finds_the_task_of_a_saved_llm_run():
    assert [task_for_architectures([f"{stem}ForCausalLM"]).name for stem in ("Llama", "Qwen2", "Qwen3")] == ["clm"] * 3


def _saved(stem: str, overrides: dict, tmp_path):
    _pytorch_model(stem, "CausalLM", overrides).save_pretrained(tmp_path / "pt")
    return tmp_path / "pt"


def test_lora_on_all_linear_layers_loads_in_peft_onto_the_pytorch_architecture(tiny_mistral, tmp_path):
    peft = pytest.importorskip("peft", reason="peft is not installed")
    from tf_finetune.config import TrainConfig
    from tf_finetune.training import train

    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_mistral)
    stem, overrides = CASES["qwen2-untied"]
    pytorch = _pytorch_model(stem, "CausalLM", {**overrides, "vocab_size": len(tokenizer)})
    pytorch.save_pretrained(tmp_path / "pt")
    for split, count in (("train", 32), ("valid", 8)):
        (tmp_path / f"{split}.txt").write_text("".join(f"the cat sat on the mat {i}\n" for i in range(count)))
    config = TrainConfig(task="clm", model_name_or_path=str(tmp_path / "pt"), tokenizer_name=str(tiny_mistral),
                         train_file=str(tmp_path / "train.txt"), validation_file=str(tmp_path / "valid.txt"),
                         block_size=16, max_seq_length=64,
                         output_dir=str(tmp_path / "out"), num_train_epochs=1, per_device_train_batch_size=4,
                         learning_rate=1e-2, lora_rank=4, lora_target_modules=["all-linear"], verbose=0)
    train(config)
    adapter = json.loads((tmp_path / "out" / "adapter" / "adapter_config.json").read_text())
    projections = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
                   "mlp.up_proj", "mlp.down_proj")
    assert sorted(adapter["target_modules"]) == sorted(f"model.layers.{layer}.{name}" for layer in (0, 1)
                                                       for name in projections)  # not lm_head
    model = peft.PeftModel.from_pretrained(pytorch, str(tmp_path / "out" / "adapter")).eval()
    tuned = transformers.TFAutoModelForCausalLM.from_pretrained(tmp_path / "out")
    ids = np.array(tokenizer(["the cat sat on the mat"])["input_ids"])
    with torch.no_grad():
        expected = model(input_ids=torch.tensor(ids)).logits.numpy()
    assert np.abs(tuned(ids).logits.numpy() - expected).max() < TOLERANCE
    original = _pytorch_model(stem, "CausalLM", {**overrides, "vocab_size": len(tokenizer)})
    assert np.abs(expected - _pytorch_logits(original, ids, np.ones_like(ids))).max() > 1e-2  # the adapter counts
