"""seqeval metric: entity-level precision, recall and F1 (and token accuracy) of tag sequences, through seqeval."""
import importlib

import datasets
import evaluate
from seqeval.metrics import accuracy_score, classification_report

_DESCRIPTION = ("seqeval: entity-level scores of sequence labelling (CoNLL-2000 style). An entity counts as found "
                "only when its type and its exact span match; accuracy is over tags.")
_CITATION = "Hiroki Nakayama, seqeval: A Python framework for sequence labeling evaluation, 2018."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of list of str): predicted tags, one list per sentence (e.g. ["B-PER", "I-PER", "O"]).
    references (list of list of str): true tags, shaped like `predictions`.
    suffix (bool): tags carry their prefix at the end (PER-B) rather than the start (default False).
    scheme (str): a seqeval.scheme name (IOB1, IOB2, IOE1, IOE2, IOBES, BILOU) for strict mode; default None.
    mode (str): "strict" to score entities by the scheme's rules; default None (CoNLL's lenient rules).
    sample_weight (list of float): optional per-sentence weights.
    zero_division ("warn", 0 or 1): the value of a score whose denominator is zero ("warn": 0 and a warning).
Returns:
    one dict per entity type, TYPE: {precision, recall, f1, number (true entities of the type)}, and
    overall_precision, overall_recall, overall_f1 (micro averages over entities), overall_accuracy (over tags).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Seqeval(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        tags = datasets.Sequence(datasets.Value("string", id="label"), id="sequence")
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": tags, "references": tags}),
            homepage="https://github.com/chakki-works/seqeval",
            reference_urls=["https://github.com/chakki-works/seqeval"],
        )

    def _compute(self, predictions, references, suffix=False, scheme=None, mode=None, sample_weight=None,
                 zero_division="warn") -> dict:
        if scheme is not None:
            scheme_module = importlib.import_module("seqeval.scheme")
            if not hasattr(scheme_module, scheme):
                raise ValueError(f"scheme should be one of IOB1, IOB2, IOE1, IOE2, IOBES, BILOU, got {scheme}")
            scheme = getattr(scheme_module, scheme)
        report = classification_report(y_true=references, y_pred=predictions, suffix=suffix, output_dict=True,
                                       scheme=scheme, mode=mode, sample_weight=sample_weight,
                                       zero_division=zero_division)
        report.pop("macro avg")
        report.pop("weighted avg")
        overall = report.pop("micro avg")
        scores = {name: {"precision": float(score["precision"]), "recall": float(score["recall"]),
                         "f1": float(score["f1-score"]), "number": int(score["support"])}
                  for name, score in report.items()}
        scores.update(overall_precision=float(overall["precision"]), overall_recall=float(overall["recall"]),
                      overall_f1=float(overall["f1-score"]),
                      overall_accuracy=float(accuracy_score(y_true=references, y_pred=predictions)))
        return scores
