"""Pearson correlation metric: a thin wrapper over scipy.stats.pearsonr."""
import datasets
import evaluate
from scipy.stats import pearsonr

_DESCRIPTION = "Pearson correlation coefficient: the linear correlation of predictions and references, in [-1, 1]."
_CITATION = "Virtanen et al., SciPy 1.0: Fundamental Algorithms for Scientific Computing in Python, 2020."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of float): predicted values.
    references (list of float): true values.
    return_pvalue (bool): also return the two-sided p-value as "p-value" (default False).
Returns:
    pearsonr (float), and p-value (float) if asked for
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Pearsonr(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
            ),
            reference_urls=["https://docs.scipy.org/doc/scipy/reference/generated/scipy.stats.pearsonr.html"],
        )

    def _compute(self, predictions, references, return_pvalue=False) -> dict:
        statistic, pvalue = pearsonr(references, predictions)
        if return_pvalue:
            return {"pearsonr": float(statistic), "p-value": float(pvalue)}
        return {"pearsonr": float(statistic)}
