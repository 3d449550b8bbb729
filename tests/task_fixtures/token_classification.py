"""Named-entity recognition on small CoNLL files: person and place words tagged B-PER / B-LOC, the rest O."""
from __future__ import annotations

import random
from pathlib import Path

from task_fixtures import Case, TinyModels
from tf_finetune.config import TrainConfig

PERSONS = ["king", "queen", "boy", "girl"]
PLACES = ["city", "town", "sea", "road"]
FILLER = ["the", "a", "cat", "dog", "sat", "ran", "on", "in", "was", "very"]

Sentence = list[tuple[str, str]]


def tagged_sentences(count: int, seed: int = 0) -> list[Sentence]:
    """Sentences of filler words (O) with one person word (B-PER) and, every other time or so, a place (B-LOC)."""
    rng = random.Random(seed)
    sentences = []
    for _ in range(count):
        words = [(rng.choice(FILLER), "O") for _ in range(rng.randint(2, 5))]
        words.insert(rng.randrange(len(words) + 1), (rng.choice(PERSONS), "B-PER"))
        if rng.random() < 0.5:
            words.insert(rng.randrange(len(words) + 1), (rng.choice(PLACES), "B-LOC"))
        sentences.append(words)
    return sentences


def write_conll(path: Path, sentences: list[Sentence], docstart: bool = True, final_blank: bool = True) -> str:
    """CoNLL-2003 style `token POS tag` lines, a blank line after each sentence (but perhaps the last)."""
    blocks = ["-DOCSTART- -X- -X- O\n"] if docstart else []
    blocks += ["".join(f"{word} NN {tag}\n" for word, tag in sentence) for sentence in sentences]
    text = "\n".join(blocks)
    path.write_text(text + "\n" if final_blank else text)
    return str(path)


def ner_case(models: TinyModels, tmp_path: Path) -> Case:
    train = write_conll(tmp_path / "train.txt", tagged_sentences(32, 0))
    valid = write_conll(tmp_path / "valid.txt", tagged_sentences(16, 1))
    test = write_conll(tmp_path / "test.txt", tagged_sentences(8, 2), final_blank=False)
    config = TrainConfig(task="ner", model_name_or_path=str(models.bert), train_file=train, validation_file=valid,
                         test_file=test, do_predict=True)
    return Case(config, ["the king sat in the city"])


CASES = {"ner": ner_case}
