"""Model families as data: refused config features, weights with no place in the model, and sharded PyTorch
safetensors, checked against PyTorch transformers' own logits (tests/test_decoders.py: the LLM families' classes)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import transformers
from safetensors.numpy import load_file, save_file

from conftest import write_sentiment_files
from tf_finetune.config import TrainConfig
from tf_finetune.core.errors import UserError
from tf_finetune.models.families import FAMILIES, family_of
from tf_finetune.models.loading import load_model, load_model_config, max_model_length
from tf_finetune.models.lora import lora_layers, module_path
from tf_finetune.models.pytorch_weights import PytorchWeights

torch = pytest.importorskip("torch", reason="torch (CPU) is not installed")

IDS = np.array([[1, 17, 5, 42, 9, 3, 77, 12, 8, 60], [1, 4, 90, 33, 2, 71, 6, 19, 44, 11]])
SMALL = {"vocab_size": 100, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64}


def _save_pytorch(model_class: str, config_class: str, directory, max_shard_size: str = "5GB", **overrides):
    """A tiny random PyTorch checkpoint saved by save_pretrained (PyTorch-format safetensors) and its logits on IDS
    (None for a model without an LM head)."""
    torch.manual_seed(0)
    config = getattr(transformers, config_class)(**{**SMALL, **overrides})
    model = getattr(transformers, model_class)(config).eval()
    model.save_pretrained(directory, max_shard_size=max_shard_size)
    if not hasattr(model, "lm_head"):
        return None
    with torch.no_grad():
        return model(input_ids=torch.tensor(IDS)).logits.numpy()


def _tf_logits(directory, auto_class: str = "TFAutoModelForCausalLM") -> np.ndarray:
    model = load_model(auto_class, str(directory), load_model_config(str(directory)))
    return model(IDS).logits.numpy()


def test_sharded_pytorch_safetensors_load_and_give_pytorchs_logits(tmp_path):
    expected = _save_pytorch("MistralForCausalLM", "MistralConfig", tmp_path, max_shard_size="20KB",
                             sliding_window=None)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 2 and not (tmp_path / "model.safetensors").exists()
    np.testing.assert_allclose(_tf_logits(tmp_path), expected, atol=1e-5)


def test_a_missing_shard_is_a_clear_error(tmp_path):
    _save_pytorch("MistralForCausalLM", "MistralConfig", tmp_path, max_shard_size="20KB", sliding_window=None)
    shard = sorted(tmp_path.glob("model-*.safetensors"))[-1]
    shard.unlink()
    with pytest.raises(UserError, match=rf"model.safetensors.index.json is damaged or incomplete \(.*{shard.name}\)"):
        _tf_logits(tmp_path)


@pytest.mark.parametrize("model_class, extra", [
    ("MistralForCausalLM", "model.layers.0.self_attn.q_proj.bias"),  # a Qwen2-style bias in a Mistral checkpoint
    ("MistralModel", "layers.1.mlp.up_proj.bias"),  # a bare base model: its names have no `model.` prefix
])
def test_base_model_weights_with_no_place_in_the_model_fail_the_load(model_class, extra, tmp_path):
    _save_pytorch(model_class, "MistralConfig", tmp_path, sliding_window=None)
    weights = load_file(str(tmp_path / "model.safetensors"))
    weights[extra] = np.zeros(32 if "q_proj" in extra else 64, np.float32)
    save_file(weights, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(UserError, match=rf"has 1 weight\(s\) of its base model that TFMistralForCausalLM has no "
                                        rf"place for \(first: {extra}\)"):
        _tf_logits(tmp_path)


def test_other_tasks_heads_and_buffers_are_dropped_without_error(tmp_path):
    _save_pytorch("MistralForCausalLM", "MistralConfig", tmp_path, sliding_window=None)
    weights = load_file(str(tmp_path / "model.safetensors"))
    weights["model.layers.0.self_attn.rotary_emb.inv_freq"] = np.ones(4, np.float32)
    save_file(weights, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    config = load_model_config(str(tmp_path), num_labels=3)
    model = load_model("TFAutoModelForSequenceClassification", str(tmp_path), config)  # lm_head: another head
    np.testing.assert_array_equal(model.model.embed_tokens.embeddings.numpy(), weights["model.embed_tokens.weight"])


@pytest.mark.parametrize("model_class, config, buffer", [  # older checkpoints hold these buffers
    ("GPT2LMHeadModel", transformers.GPT2Config(vocab_size=100, n_embd=32, n_layer=1, n_head=2),
     "transformer.h.0.attn.masked_bias"),
    ("BertModel", transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                          intermediate_size=64), "embeddings.token_type_ids"),
])
def test_buffers_in_a_checkpoint_are_not_weights_without_a_place(model_class, config, buffer, tmp_path):
    torch.manual_seed(0)
    getattr(transformers, model_class)(config).save_pretrained(tmp_path)
    weights = load_file(str(tmp_path / "model.safetensors"))
    weights[buffer] = np.zeros(8, np.float32)
    save_file(weights, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    load_model("TFAutoModel", str(tmp_path), load_model_config(str(tmp_path)))


def test_a_llama_checkpoint_trains_with_its_family_facts(tiny_mistral, tmp_path):
    from tf_finetune.training import FineTuneRun

    model_dir = tmp_path / "llama"
    model_dir.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(tiny_mistral / name, model_dir / name)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tiny_mistral))
    _save_pytorch("LlamaForCausalLM", "LlamaConfig", model_dir, vocab_size=len(tokenizer),
                  pad_token_id=tokenizer.pad_token_id)
    paths = write_sentiment_files(tmp_path, {"train": 16, "valid": 8})
    run = FineTuneRun(TrainConfig(task="text-classification", model_name_or_path=str(model_dir),
                                  train_file=paths["train"], validation_file=paths["valid"],
                                  output_dir=str(tmp_path / "out"), max_seq_length=32, lora_rank=2, verbose=0))
    assert type(run.model).__name__ == "TFLlamaForSequenceClassification"
    assert sorted(module_path(layer.base) for layer in lora_layers(run.model)) == [  # the family's LoRA targets
        f"model.layers.{layer}.self_attn.{name}" for layer in (0, 1) for name in ("q_proj", "v_proj")]
    np.testing.assert_array_equal(run.model.model.embed_tokens.embeddings.numpy(),
                                  load_file(str(model_dir / "model.safetensors"))["model.embed_tokens.weight"])


@pytest.mark.parametrize("config_class, overrides, feature", [
    ("LlamaConfig", {"rope_scaling": {"rope_type": "yarn", "factor": 2.0}}, "rope_scaling"),
    ("LlamaConfig", {"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}, "rope_scaling"),
    ("Qwen2Config", {"use_sliding_window": True}, "use_sliding_window=True"),
    ("Qwen3Config", {"use_sliding_window": True}, "use_sliding_window=True"),
    ("Gemma3TextConfig", {"use_bidirectional_attention": True}, "use_bidirectional_attention=True"),
    ("Gemma2Config", {"rope_scaling": {"rope_type": "yarn", "factor": 2.0}}, "rope_scaling"),
    ("MistralConfig", {"head_dim": 16}, "head_dim=16"),
    ("MistralConfig", {"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, "rope_scaling"),  # PyTorch reads it
])
def test_config_features_the_tf_class_lacks_are_refused_before_loading(config_class, overrides, feature, tmp_path):
    getattr(transformers, config_class)(**{**SMALL, **overrides}).save_pretrained(tmp_path)
    with pytest.raises(UserError, match=rf"is a \w+ model with {feature}.*which its TensorFlow class does not "
                                        r"compute; pick a \w+ checkpoint without it\.$"):
        load_model_config(str(tmp_path))


def test_mistral_inputs_are_limited_to_the_sliding_window(tiny_mistral, tmp_path):
    transformers.MistralConfig(**SMALL, sliding_window=16).save_pretrained(tmp_path)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tiny_mistral))
    assert max_model_length(load_model_config(str(tmp_path)), tokenizer) == 16
    transformers.MistralConfig(**SMALL, sliding_window=None).save_pretrained(tmp_path)
    assert max_model_length(load_model_config(str(tmp_path)), tokenizer) == 64


def test_a_family_without_an_entry_has_no_facts():
    assert "deberta-v2" not in FAMILIES
    assert family_of("deberta-v2").lora_targets == () and family_of("deberta-v2").unsupported == ()


def test_a_tied_mistral_exports_its_own_output_weight_untied(tmp_path):
    import tf_keras

    config = transformers.MistralConfig(**SMALL, sliding_window=None, tie_word_embeddings=True)
    tf_keras.utils.set_random_seed(0)
    model = transformers.TFMistralForCausalLM(config)  # its lm_head is a weight of its own, unlike PyTorch's
    model(model.dummy_inputs)
    PytorchWeights(model).save_pretrained(str(tmp_path))
    exported = transformers.MistralForCausalLM.from_pretrained(str(tmp_path)).eval()
    with torch.no_grad():
        expected = exported(input_ids=torch.tensor(IDS)).logits.numpy()
    np.testing.assert_allclose(model(IDS).logits.numpy(), expected, atol=1e-5)


@pytest.mark.parametrize("policy", ["fp16", "bf16"])
def test_mistral_refuses_mixed_precision_because_its_tf_class_fails_under_it(tiny_mistral, policy):
    from tf_finetune.runtime.distribute import precision_policy

    with pytest.raises(UserError, match=f"fails under --mixed_precision {policy}"):
        family_of("mistral").check_mixed_precision(policy, "tiny")
    family_of("mistral").check_mixed_precision("no", "tiny")
    with precision_policy(policy):
        model = load_model("TFAutoModelForCausalLM", str(tiny_mistral), load_model_config(str(tiny_mistral)))
        with pytest.raises(Exception, match="expected to be a (float|half) tensor"):  # transformers' mask
            model(np.array([[1, 2, 3]]))
