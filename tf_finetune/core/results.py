"""A run's results (all_results.json): which of them are metrics of the fine-tuned model."""
from __future__ import annotations

import numbers
from typing import Any, Mapping

BASELINE_PREFIX = "baseline_"  # the features baseline's results: baseline_eval_accuracy, baseline_C, ...
# Results that measure the run rather than the model: sizes, times, throughput and parameter counts
_MEASUREMENTS = ("_samples", "_runtime", "_samples_per_second", "_steps_per_second", "_parameters")
_RUN_FACTS = ("epoch", "best_epoch")  # how far training went, and which epoch's weights were kept


def is_metric(key: str, value: Any) -> bool:
    """Whether a result is a validation metric of the fine-tuned model: a number named `eval_<metric>` or a bare
    metric name such as perplexity; not a training result (train_*), a baseline's, or a measurement of the run."""
    return (isinstance(value, numbers.Real) and not isinstance(value, bool) and key not in _RUN_FACTS
            and not key.startswith(("train_", BASELINE_PREFIX)) and not key.endswith(_MEASUREMENTS))


def validation_metrics(results: Mapping[str, Any]) -> dict[str, Any]:
    """The results that are metrics (see is_metric), in their order."""
    return {key: value for key, value in results.items() if is_metric(key, value)}
