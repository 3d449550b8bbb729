"""Length-grouped training batches: each example once per epoch, lengths grouped, a new order per epoch and seed that
a resumed run reproduces, rows of several sequences (choices) measured by their longest."""
from __future__ import annotations

import datasets
import numpy as np
import pytest

from tf_finetune.data.batching import example_lengths, length_grouped_batches, length_grouped_dataset

LENGTHS = np.random.default_rng(0).integers(1, 120, size=1003)


def padded_tokens(lengths: np.ndarray, batches: list[np.ndarray]) -> int:
    return sum(len(batch) * lengths[batch].max() for batch in batches)


def test_every_example_is_in_exactly_one_batch_and_only_the_last_is_smaller():
    batches = length_grouped_batches(LENGTHS, batch_size=16, window=8, seed=1, epoch=0)
    assert np.array_equal(np.sort(np.concatenate(batches)), np.arange(len(LENGTHS)))
    assert {len(batch) for batch in batches[:-1]} == {16} and len(batches[-1]) == len(LENGTHS) % 16


def test_lengths_are_grouped_far_better_than_random_batches():
    grouped = length_grouped_batches(LENGTHS, batch_size=16, window=50, seed=1, epoch=0)
    random = np.split(np.random.default_rng(1).permutation(len(LENGTHS)), range(16, len(LENGTHS), 16))
    real = LENGTHS.sum()
    assert padded_tokens(LENGTHS, grouped) / real < 1.1 < 1.5 < padded_tokens(LENGTHS, random) / real


def test_order_changes_with_epoch_and_seed_and_repeats_for_the_same_pair():
    def order(seed, epoch):
        return np.concatenate(length_grouped_batches(LENGTHS, 16, 8, seed, epoch)).tolist()

    assert order(1, 0) == order(1, 0)
    assert len({tuple(order(1, 0)), tuple(order(1, 1)), tuple(order(2, 0))}) == 3


def test_lengths_follow_selections_and_take_the_longest_choice():
    rows = datasets.Dataset.from_dict({"input_ids": [[1, 2, 3], [1], [4, 5]],
                                       "choices": [[[1, 2], [3]], [[1], [2, 3, 4]], [[5], [6]]]})
    assert example_lengths(rows).tolist() == [3, 1, 2]
    assert example_lengths(rows.select([2, 0])).tolist() == [2, 3]
    assert example_lengths(rows, "choices").tolist() == [2, 3, 1]


def _row_order(dataset) -> list[list[int]]:
    """The row numbers (carried as labels) of one pass, batch by batch."""
    return [labels.numpy().tolist() for _, labels in dataset]


@pytest.fixture()
def rows() -> datasets.Dataset:
    return datasets.Dataset.from_dict({"input_ids": [[7] * int(n) for n in LENGTHS[:50]], "labels": list(range(50))})


def collate(examples: list[dict]) -> dict[str, np.ndarray]:
    width = max(len(example["input_ids"]) for example in examples)
    return {"input_ids": np.array([example["input_ids"] + [0] * (width - len(example["input_ids"]))
                                   for example in examples]),
            "labels": np.array([example["labels"] for example in examples])}


def test_each_pass_is_the_next_epoch_and_a_resumed_run_starts_where_it_left_off(rows):
    def dataset(first_epoch: int, drop_remainder: bool = False):
        return length_grouped_dataset(rows, collate, ["labels"], batch_size=8, window=2, seed=3,
                                      drop_remainder=drop_remainder, first_epoch=lambda: first_epoch)

    uninterrupted = dataset(0)
    epoch0, epoch1, epoch2 = (_row_order(uninterrupted) for _ in range(3))
    assert epoch0 != epoch1 != epoch2
    for epoch in (epoch0, epoch1):
        assert sorted(sum(epoch, [])) == list(range(50)) and [len(batch) for batch in epoch][-1] == 2
    assert _row_order(dataset(1)) == epoch1 and _row_order(dataset(2)) == epoch2
    assert int(uninterrupted.cardinality()) == 7
    dropped = dataset(0, drop_remainder=True)
    assert _row_order(dropped) == epoch0[:-1] and int(dropped.cardinality()) == 6
    inputs, _ = next(iter(dataset(0)))
    assert inputs["input_ids"].shape[1] == max(LENGTHS[epoch0[0]])  # padded to its own longest row only
