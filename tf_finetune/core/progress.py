"""Progress bars (tqdm) for evaluation and prediction: shown only when the work lasts over two seconds."""
from __future__ import annotations

from typing import Any, Iterable, Iterator, Optional

import tf_keras
from tqdm import tqdm

SHOW_AFTER_SECONDS = 2.0


def _bar(description: str, total: Optional[int]) -> tqdm:
    return tqdm(total=total, desc=description, unit="batch", delay=SHOW_AFTER_SECONDS, leave=False)


def _batches(dataset: Any) -> Optional[int]:
    """The number of batches of a tf.data dataset or a sized iterable (None when unknown)."""
    if hasattr(dataset, "__len__") and not hasattr(dataset, "cardinality"):
        return len(dataset)
    try:
        count = int(dataset.cardinality())
    except (AttributeError, TypeError):
        return None
    return count if count >= 0 else None


def with_progress(dataset: Iterable[Any], description: str) -> Iterator[Any]:
    """The batches of `dataset` (a tf.data dataset, or e.g. a range of batch starts), counted on a progress bar."""
    with _bar(description, _batches(dataset)) as bar:
        for batch in dataset:
            yield batch
            bar.update()


class PredictionProgress(tf_keras.callbacks.Callback):
    """A progress bar over the batches of `model.predict` (which is called with verbose=0)."""

    def __init__(self, description: str):
        super().__init__()
        self.description = description
        self._bar: Optional[tqdm] = None

    def on_predict_begin(self, logs: Optional[dict] = None) -> None:
        self._bar = _bar(self.description, self.params.get("steps"))

    def on_predict_batch_end(self, batch: int, logs: Optional[dict] = None) -> None:
        if self._bar is not None:
            self._bar.update()

    def on_predict_end(self, logs: Optional[dict] = None) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
