"""GLUE metric: each GLUE task's official scores, as scikit-learn and scipy compute them."""
import datasets
import evaluate
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import f1_score, matthews_corrcoef

_DESCRIPTION = "GLUE: the General Language Understanding Evaluation benchmark's per-task metrics."
_CITATION = "Wang et al., GLUE: A Multi-Task Benchmark and Analysis Platform for NLU, ICLR 2019."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int, or of float for stsb): predicted labels or scores.
    references (list of int, or of float for stsb): true labels or scores.
Returns, by config:
    cola: matthews_correlation
    mrpc, qqp: accuracy, f1
    stsb: pearson, spearmanr
    sst2, mnli, mnli_matched, mnli_mismatched, qnli, rte, wnli, hans: accuracy
"""

_CONFIGS = (
    "cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "mnli_matched", "mnli_mismatched", "qnli", "rte", "wnli", "hans"
)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Glue(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        if self.config_name not in _CONFIGS:
            raise ValueError(f"glue metric config must be one of {', '.join(_CONFIGS)}; got {self.config_name!r}")
        value = datasets.Value("float32" if self.config_name == "stsb" else "int64")
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": value, "references": value}),
            reference_urls=["https://gluebenchmark.com/"],
            format="numpy",
        )

    def _compute(self, predictions, references) -> dict:
        if self.config_name == "cola":
            return {"matthews_correlation": float(matthews_corrcoef(references, predictions))}
        if self.config_name == "stsb":
            return {
                "pearson": float(pearsonr(predictions, references)[0]),
                "spearmanr": float(spearmanr(predictions, references)[0]),
            }
        accuracy = float((predictions == references).mean())
        if self.config_name in ("mrpc", "qqp"):
            return {"accuracy": accuracy, "f1": float(f1_score(references, predictions))}
        return {"accuracy": accuracy}
