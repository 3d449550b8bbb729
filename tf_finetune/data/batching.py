"""Length-grouped training batches: examples of similar length share a batch, so little of a batch is padding.

Each epoch: shuffle the examples, sort them by length inside windows of `window` batches, cut the windows into
batches, and shuffle the batches (the Hugging Face Trainer's `group_by_length`, with a seeded order per epoch). Every
example is in exactly one batch of every epoch (the one smaller batch, if any, comes last), and the order is a
function of (seed, epoch) alone, so a resumed run sees the batches an uninterrupted run would.

`prepare_tf_dataset` cannot express this (it shuffles all indices itself, or keeps one fixed order for every epoch),
so `length_grouped_dataset` builds the `tf.data` input from a generator that collates the epoch's batches with the
task's collator, in the layout `prepare_tf_dataset` gives: (features, labels) with the model's label names.
"""
from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Callable, Iterator, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import tensorflow as tf

if TYPE_CHECKING:
    from datasets import Dataset


def example_lengths(features: "Dataset", column: str = "input_ids") -> np.ndarray:
    """Tokens per row of `column`: the list's length, or its longest list for rows of several sequences (choices)."""
    values = features.with_format("arrow")[column].combine_chunks()  # in the rows' order, selections included
    if not pa.types.is_list(values.type.value_type) and not pa.types.is_large_list(values.type.value_type):
        return pc.list_value_length(values).to_numpy(zero_copy_only=False).astype(np.int64)
    lengths = np.zeros(len(values), dtype=np.int64)
    np.maximum.at(lengths, pc.list_parent_indices(values).to_numpy(),
                  pc.list_value_length(pc.list_flatten(values)).to_numpy(zero_copy_only=False))
    return lengths


def length_grouped_batches(lengths: np.ndarray, batch_size: int, window: int, seed: int,
                           epoch: int) -> list[np.ndarray]:
    """One epoch's batches of example indices: shuffled with (seed, epoch), sorted by length (longest first) inside
    windows of `window` batches, cut into batches of `batch_size`, batch order shuffled; a smaller last batch last."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    span = batch_size * window
    grouped = np.concatenate([chunk[np.argsort(-lengths[chunk], kind="stable")]
                              for chunk in np.split(order, range(span, len(order), span))]) if len(order) else order
    batches = np.split(grouped, range(batch_size, len(grouped), batch_size))
    full = [batches[i] for i in rng.permutation(len(batches)) if len(batches[i]) == batch_size]
    return full + [batch for batch in batches if len(batch) < batch_size]


def length_grouped_dataset(features: "Dataset", collate_fn: Callable[[list[dict]], dict], label_names: list[str],
                           batch_size: int, window: int, seed: int, drop_remainder: bool,
                           first_epoch: Callable[[], int], skip_batches: int = 0,
                           length_column: Optional[str] = "input_ids") -> tf.data.Dataset:
    """Training batches of `features` (the columns the collator takes), length-grouped anew every time the dataset
    is iterated: the n-th iteration is epoch first_epoch() + n - 1. Elements are (inputs, labels) as
    prepare_tf_dataset makes them (`label_names`: the model's label columns); its cardinality is the number of
    batches of one epoch. `length_column` None: rows have no length, and batches are random (in the same seeded
    order per epoch).

    `skip_batches`: the dataset is the rest of one resumed epoch, without its first skip_batches batches (never
    collated); its cardinality is what is left."""
    lengths = example_lengths(features, length_column) if length_column else np.zeros(len(features), np.int64)
    epochs = itertools.count()
    label_names = [name for name in label_names if name in features.column_names]

    def split(batch: dict[str, np.ndarray]):
        inputs = {name: value for name, value in batch.items() if name not in label_names}
        if not label_names:
            return inputs
        labels = batch[label_names[0]] if len(label_names) == 1 else {name: batch[name] for name in label_names}
        return inputs, labels

    def collate(indices: np.ndarray) -> dict[str, np.ndarray]:
        rows = features[indices]
        return collate_fn([dict(zip(rows, values)) for values in zip(*rows.values())])

    def batches() -> Iterator:
        epoch = first_epoch() + next(epochs)
        for number, indices in enumerate(length_grouped_batches(lengths, batch_size, window, seed, epoch)):
            if number >= skip_batches and (len(indices) == batch_size or not drop_remainder):
                np.random.seed([seed, epoch, number])  # a collator's random choices (masks) depend on the batch only
                yield split(collate(indices))

    sample = split(collate(np.arange(min(batch_size, len(features)))))
    signature = tf.nest.map_structure(lambda value: tf.TensorSpec((None,) * np.ndim(value), tf.as_dtype(value.dtype)),
                                      sample)
    steps = (len(features) // batch_size if drop_remainder else -(-len(features) // batch_size)) - skip_batches
    dataset = tf.data.Dataset.from_generator(batches, output_signature=signature)
    return dataset.apply(tf.data.experimental.assert_cardinality(steps)).prefetch(tf.data.AUTOTUNE)
