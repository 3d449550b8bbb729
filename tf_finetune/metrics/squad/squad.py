"""SQuAD v1.1 metric: the official evaluation script's exact match and token F1, in evaluate's `squad` format."""
import re
import string
from collections import Counter

import datasets
import evaluate

_PUNCTUATION = frozenset(string.punctuation)

_DESCRIPTION = ("SQuAD v1.1: exact match and token-level F1 of predicted answers against the gold answers (the best "
                "over the gold answers of each question), after lower-casing and removing punctuation, the articles "
                "a/an/the and extra whitespace; averaged over the questions, x100.")
_CITATION = "Rajpurkar et al., SQuAD: 100,000+ Questions for Machine Comprehension of Text, EMNLP 2016."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of dict): {"id": question id, "prediction_text": the predicted answer}.
    references (list of dict): {"id": question id, "answers": {"text": [gold answers], "answer_start": [offsets]}}.
Returns:
    exact_match (float): percentage of questions whose normalised prediction equals a normalised gold answer.
    f1 (float): mean over questions of the best token F1 against a gold answer, x100.
"""


def normalize_answer(text: str) -> str:
    """Lower case, then remove punctuation, the articles a/an/the and extra whitespace (the official order)."""
    text = "".join(char for char in text.lower() if char not in _PUNCTUATION)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def f1_score(prediction: str, gold: str) -> float:
    """Token F1 of the normalised answers (0 when they share no token)."""
    predicted, golden = normalize_answer(prediction).split(), normalize_answer(gold).split()
    same = sum((Counter(predicted) & Counter(golden)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(golden)
    return 2 * precision * recall / (precision + recall)


def exact_match_score(prediction: str, gold: str) -> float:
    """1.0 when the normalised answers are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Squad(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({
                "predictions": {"id": datasets.Value("string"), "prediction_text": datasets.Value("string")},
                "references": {"id": datasets.Value("string"),
                               "answers": {"text": datasets.List(datasets.Value("string")),
                                           "answer_start": datasets.List(datasets.Value("int32"))}},
            }),
            reference_urls=["https://rajpurkar.github.io/SQuAD-explorer/"],
        )

    def _compute(self, predictions, references) -> dict:
        """As the official script: a question without a prediction scores 0 and still counts."""
        predicted = {prediction["id"]: prediction["prediction_text"] for prediction in predictions}
        exact_match = f1 = 0.0
        for reference in references:
            if reference["id"] not in predicted:
                continue
            golds, prediction = reference["answers"]["text"], predicted[reference["id"]]
            exact_match += max(exact_match_score(prediction, gold) for gold in golds)
            f1 += max(f1_score(prediction, gold) for gold in golds)
        return {"exact_match": 100.0 * exact_match / len(references), "f1": 100.0 * f1 / len(references)}
