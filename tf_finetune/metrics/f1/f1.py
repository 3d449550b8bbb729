"""F1 metric: a thin wrapper over scikit-learn's f1_score."""
import datasets
import evaluate
from sklearn.metrics import f1_score

_DESCRIPTION = "F1: the harmonic mean of precision and recall, 2 * P * R / (P + R)."
_CITATION = "Pedregosa et al., Scikit-learn: Machine Learning in Python, JMLR 12, 2011."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted labels (a list of 0/1 per example for the `multilabel` config).
    references (list of int): true labels, shaped like `predictions`.
    labels (list of int): labels to include when `average` is not "binary", and their order when it is None.
    pos_label (int): the positive class when `average` is "binary" (default 1).
    average (str or None): "binary" (default), "micro", "macro", "weighted", "samples",
        or None for one score per label.
    sample_weight (list of float): optional per-example weights.
Returns:
    f1 (float, or an array of floats when `average` is None)
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class F1(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        label = datasets.Value("int64")
        if self.config_name == "multilabel":
            label = datasets.Sequence(label)
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": label, "references": label}),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.f1_score.html"],
        )

    def _compute(
        self, predictions, references, labels=None, pos_label=1, average="binary", sample_weight=None
    ) -> dict:
        score = f1_score(
            references, predictions, labels=labels, pos_label=pos_label, average=average, sample_weight=sample_weight
        )
        return {"f1": score if average is None else float(score)}
