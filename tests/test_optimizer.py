"""The optimizer: lazy (row-wise) Adam updates of embeddings agree with AdamWeightDecay on the rows they touch."""
from __future__ import annotations

import numpy as np
import tensorflow as tf
from transformers import TFAutoModelForSequenceClassification

from tf_finetune.runtime.optimizer import LazyAdamWeightDecay, build_optimizer

_SETTINGS = dict(learning_rate=1e-2, total_steps=10, warmup_steps=0, weight_decay=0.1, epsilon=1e-8, max_grad_norm=0)


def _step(lazy: bool, rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An 8x4 embedding, its first Adam moment and a dense 4-vector after one update per entry of `rows`
    (gradient 1 for each listed row)."""
    embedding = tf.Variable(np.arange(32, dtype="float32").reshape(8, 4) / 10, name="embeddings")
    dense = tf.Variable(np.ones(4, "float32"), name="kernel")
    optimizer = build_optimizer(**_SETTINGS, lazy=lazy)
    for step_rows in rows:
        indices = tf.constant(step_rows, tf.int64)
        sparse = tf.IndexedSlices(tf.ones((len(step_rows), 4)), indices, dense_shape=tf.constant([8, 4], tf.int64))
        optimizer.apply_gradients([(sparse, embedding), (tf.fill([4], 0.5), dense)])
    assert isinstance(optimizer, LazyAdamWeightDecay) == lazy
    return embedding.numpy(), optimizer.get_slot(embedding, "m").numpy(), dense.numpy()


def test_lazy_update_matches_adam_on_touched_rows_and_leaves_the_others_alone():
    lazy, moment, lazy_dense = _step(True, [[1, 5, 5]])  # row 5 twice: its gradients add up
    eager, _, eager_dense = _step(False, [[1, 5, 5]])
    np.testing.assert_allclose(lazy[[1, 5]], eager[[1, 5]], rtol=1e-6)
    untouched = [0, 2, 3, 4, 6, 7]
    np.testing.assert_array_equal(lazy[untouched], np.arange(32, dtype="float32").reshape(8, 4)[untouched] / 10)
    assert not np.allclose(eager[untouched], lazy[untouched])  # AdamWeightDecay decays every row
    np.testing.assert_allclose(lazy_dense, eager_dense, rtol=1e-6)  # dense gradients: plain AdamWeightDecay
    assert np.flatnonzero(moment.any(axis=1)).tolist() == [1, 5]
    np.testing.assert_allclose(moment[5], 2 * moment[1])


def test_rows_seen_earlier_keep_their_state_when_later_steps_skip_them():
    first, _, _ = _step(True, [[2]])
    both, _, _ = _step(True, [[2], [6]])
    np.testing.assert_array_equal(first[2], both[2])
    assert not np.allclose(_step(False, [[2], [6]])[0][2], first[2])  # Adam's momentum keeps moving row 2


def test_training_step_changes_only_the_embedding_rows_of_the_batch(tiny_bert):
    model = TFAutoModelForSequenceClassification.from_pretrained(str(tiny_bert), num_labels=2)
    model.compile(optimizer=build_optimizer(**{**_SETTINGS, "learning_rate": 1e-3}, lazy=True))
    batch = {"input_ids": np.array([[2, 7, 9, 3], [2, 11, 7, 3]]), "attention_mask": np.ones((2, 4), "int32"),
             "labels": np.array([0, 1])}
    embeddings = model.bert.embeddings.weight
    before = embeddings.numpy()
    model.train_on_batch(batch)
    changed = np.flatnonzero((embeddings.numpy() != before).any(axis=1))
    assert changed.tolist() == [2, 3, 7, 9, 11]

