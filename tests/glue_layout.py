"""Writes a tiny GLUE tree in the original distribution layout (headers, BOM, no-header CoLA, stray quotes)."""
from __future__ import annotations

import random
from pathlib import Path

from conftest import sentiment_rows

_MNLI_COLUMNS = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
                 "sentence1_parse", "sentence2_parse", "sentence1", "sentence2"]


def _write(path: Path, header: list[str] | None, rows: list[list], bom: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = (["\t".join(header)] if header else []) + ["\t".join(map(str, row)) for row in rows]
    path.write_text(("\ufeff" if bom else "") + "\n".join(lines) + "\n", encoding="utf-8")


def _pairs(count: int, seed: int) -> list[tuple[str, str, int]]:
    """Sentence pairs labelled 1 when the second repeats the first's adjective (learnable), 0 otherwise."""
    rows = []
    for i, (sentence, label) in enumerate(sentiment_rows(count, seed)):
        same = i % 3 != 0
        other = sentence if same else sentence.replace("very", "not")
        rows.append((sentence, f'" {other}' if i % 4 == 0 else other, int(same)))
    return rows


def write_glue_layout(root: Path, count: int = 24) -> Path:
    """All ten tasks' train/dev/test files under root, `count` rows per split."""
    rng = random.Random(0)
    for split, seed in (("train", 0), ("dev", 1), ("test", 2)):
        sentences = sentiment_rows(count, seed)
        pairs = _pairs(count, seed)
        labelled = split != "test"
        # CoLA: train/dev without header (source, label, mark, sentence); test with header.
        if labelled:
            _write(root / "CoLA" / f"{split}.tsv", None,
                   [["gj04", int(label == "positive"), "" if label == "positive" else "*", s]
                    for s, label in sentences])
        else:
            _write(root / "CoLA" / "test.tsv", ["index", "sentence"], [[i, s] for i, (s, _) in enumerate(sentences)])
        _write(root / "SST-2" / f"{split}.tsv", ["sentence", "label"] if labelled else ["index", "sentence"],
               [[s, int(label == "positive")] if labelled else [i, s] for i, (s, label) in enumerate(sentences)])
        _write(root / "MRPC" / f"{split}.tsv",
               ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"] if labelled
               else ["index", "#1 ID", "#2 ID", "#1 String", "#2 String"],
               [[y if labelled else i, 1000 + i, 2000 + i, a, b] for i, (a, b, y) in enumerate(pairs)], bom=labelled)
        _write(root / "QQP" / f"{split}.tsv",
               ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"] if labelled
               else ["id", "question1", "question2"],
               [[i, 2 * i, 2 * i + 1, a, b, y] if labelled else [i, a, b] for i, (a, b, y) in enumerate(pairs)])
        stsb_header = ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1",
                       "sentence2"]
        _write(root / "STS-B" / f"{split}.tsv", stsb_header + (["score"] if labelled else []),
               [[i, "main-captions", "MSRvid", "2012test", f"{i:04d}", "none", "none", a, b]
                + ([f"{y * 4 + rng.random():.3f}"] if labelled else []) for i, (a, b, y) in enumerate(pairs)])
        nli = ["entailment", "neutral", "contradiction"]
        for name, suffix in (("train", ""), ("dev", "_matched"), ("dev", "_mismatched"), ("test", "_matched"),
                             ("test", "_mismatched")):
            if name != split:
                continue
            header = _MNLI_COLUMNS + (["label1", "gold_label"] if labelled else [])
            rows = [[i, i, f"{i}e", "fiction", "( a )", "( b )", "(ROOT a)", "(ROOT b)", a, b]
                    + ([nli[y], nli[y]] if labelled else []) for i, (a, b, y) in enumerate(pairs)]
            if suffix == "_mismatched" and labelled:
                rows = [row[:-2] + [nli[2], nli[2]] if row[0] % 2 else row for row in rows]
            _write(root / "MNLI" / f"{name}{suffix}.tsv", header, rows)
        for task, names in (("QNLI", ("entailment", "not_entailment")), ("RTE", ("entailment", "not_entailment"))):
            columns = ["question", "sentence"] if task == "QNLI" else ["sentence1", "sentence2"]
            _write(root / task / f"{split}.tsv", ["index", *columns] + (["label"] if labelled else []),
                   [[i, a, b] + ([names[1 - y]] if labelled else []) for i, (a, b, y) in enumerate(pairs)])
        _write(root / "WNLI" / f"{split}.tsv", ["index", "sentence1", "sentence2"] + (["label"] if labelled else []),
               [[i, a, b] + ([y] if labelled else []) for i, (a, b, y) in enumerate(pairs)])
    return root
