"""Spearman rank correlation metric: a thin wrapper over scipy.stats.spearmanr."""
import datasets
import evaluate
from scipy.stats import spearmanr

_DESCRIPTION = "Spearman rank correlation coefficient: the correlation of the ranks of predictions and references."
_CITATION = "Virtanen et al., SciPy 1.0: Fundamental Algorithms for Scientific Computing in Python, 2020."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of float): predicted values.
    references (list of float): true values.
    return_pvalue (bool): also return the p-value as "spearmanr_pvalue" (default False).
Returns:
    spearmanr (float), and spearmanr_pvalue (float) if asked for
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Spearmanr(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
            ),
            reference_urls=["https://docs.scipy.org/doc/scipy/reference/generated/scipy.stats.spearmanr.html"],
        )

    def _compute(self, predictions, references, return_pvalue=False) -> dict:
        statistic, pvalue = spearmanr(references, predictions)
        if return_pvalue:
            return {"spearmanr": float(statistic), "spearmanr_pvalue": float(pvalue)}
        return {"spearmanr": float(statistic)}
