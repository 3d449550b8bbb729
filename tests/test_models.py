"""Loading checkpoints: native TF weights, PyTorch-only safetensors (converted), and clear errors otherwise."""
from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import load_file

from tf_finetune.core.errors import UserError
from tf_finetune.models.loading import load_model, load_model_config, load_tokenizer, max_model_length


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
    tokenizer = load_tokenizer(str(minilm_path))
    logits = model(tokenizer(["a [MASK] dog"], return_tensors="tf")).logits
    # one score per entry of the checkpoint's own vocabulary file, over the pretrained (tied) word embeddings
    assert logits.shape[-1] == len((minilm_path / "vocab.txt").read_text().splitlines()) == 30522
    expected = load_file(str(minilm_path / "model.safetensors"))["embeddings.word_embeddings.weight"]
    np.testing.assert_array_equal(model.get_output_embeddings().weight.numpy(), expected)


@pytest.mark.parametrize("auto_class", ["TFAutoModelForTokenClassification", "TFAutoModelForQuestionAnswering",
                                        "TFAutoModelForMultipleChoice"])
def test_real_encoder_loads_for_heads_that_drop_its_pooler(auto_class, minilm_path):
    # its pooler and position_ids buffer have no place in these models: legitimately dropped, not an error
    model = load_model(auto_class, str(minilm_path), load_model_config(str(minilm_path)))
    expected = load_file(str(minilm_path / "model.safetensors"))["encoder.layer.5.output.dense.weight"]
    np.testing.assert_array_equal(model.bert.encoder.layer[5].bert_output.dense.kernel.numpy(), expected.T)


def test_file_instead_of_directory(tiny_bert):
    with pytest.raises(UserError, match="is a file, not a model directory"):
        load_model_config(str(tiny_bert / "config.json"))


def test_directory_without_weights(tiny_bert, tmp_path):
    (tmp_path / "config.json").write_text((tiny_bert / "config.json").read_text())
    with pytest.raises(UserError, match="no TensorFlow weights"):
        load_model("TFAutoModelForSequenceClassification", str(tmp_path), load_model_config(str(tmp_path)))
