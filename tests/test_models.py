"""Loading checkpoints: native TF weights, PyTorch-only safetensors (converted), and clear errors otherwise."""
from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import load_file

from tf_finetune.errors import UserError
from tf_finetune.models import load_model, load_model_config, load_tokenizer, max_model_length


def test_native_tf_checkpoint_loads(tiny_bert):
    config = load_model_config(str(tiny_bert), num_labels=3)
    model = load_model("TFAutoModelForSequenceClassification", str(tiny_bert), config)
    assert model.config.num_labels == 3 and model.config.hidden_size == 32


def test_pytorch_only_safetensors_load_with_their_real_weights(minilm_path):
    config = load_model_config(str(minilm_path), num_labels=2)
    model = load_model("TFAutoModelForSequenceClassification", str(minilm_path), config)
    expected = load_file(str(minilm_path / "model.safetensors"))["embeddings.word_embeddings.weight"]
    loaded = model.bert.embeddings.weight.numpy()
    np.testing.assert_array_equal(loaded, expected)
    assert max_model_length(config, load_tokenizer(str(minilm_path))) == 512


def test_masked_lm_head_is_created_for_a_bare_encoder(minilm_path):
    config = load_model_config(str(minilm_path))
    model = load_model("TFAutoModelForMaskedLM", str(minilm_path), config)
    assert model.config.vocab_size == 30522


def test_file_instead_of_directory(tiny_bert):
    with pytest.raises(UserError, match="is a file, not a model directory"):
        load_model_config(str(tiny_bert / "config.json"))


def test_directory_without_weights(tiny_bert, tmp_path):
    (tmp_path / "config.json").write_text((tiny_bert / "config.json").read_text())
    with pytest.raises(UserError, match="no TensorFlow weights"):
        load_model("TFAutoModelForSequenceClassification", str(tmp_path), load_model_config(str(tmp_path)))
