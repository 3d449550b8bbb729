"""SQuAD v2.0 metric: the official evaluation script (with no-answer probabilities), in evaluate's `squad_v2`
format."""
import re
import string
from collections import Counter

import datasets
import evaluate

_PUNCTUATION = frozenset(string.punctuation)

_DESCRIPTION = ("SQuAD v2.0: exact match and token-level F1 as in v1.1, where an unanswerable question is right only "
                "when the prediction is empty; also split into answerable (HasAns_) and unanswerable (NoAns_) "
                "questions, and the best scores over no-answer probability thresholds (best_*).")
_CITATION = "Rajpurkar, Jia and Liang, Know What You Don't Know: Unanswerable Questions for SQuAD, ACL 2018."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of dict): {"id": question id, "prediction_text": the answer ("" for no answer),
        "no_answer_probability": how likely the question has no answer}.
    references (list of dict): {"id": question id, "answers": {"text": [gold answers, none if unanswerable],
        "answer_start": [offsets]}}.
    no_answer_threshold (float): predict no answer where no_answer_probability exceeds it (default 1.0: never).
Returns:
    exact, f1, total; HasAns_exact, HasAns_f1, HasAns_total (when some questions have answers); NoAns_exact,
    NoAns_f1, NoAns_total (when some have none); best_exact, best_exact_thresh, best_f1, best_f1_thresh.
"""


def normalize_answer(text: str) -> str:
    """Lower case, then remove punctuation, the articles a/an/the and extra whitespace (the official order)."""
    text = "".join(char for char in text.lower() if char not in _PUNCTUATION)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text, flags=re.UNICODE).split())


def compute_exact(gold: str, prediction: str) -> int:
    """1 when the normalised answers are equal, else 0."""
    return int(normalize_answer(gold) == normalize_answer(prediction))


def compute_f1(gold: str, prediction: str) -> float:
    """Token F1 of the normalised answers; when either is empty, 1 if both are, else 0."""
    golden, predicted = normalize_answer(gold).split(), normalize_answer(prediction).split()
    if not golden or not predicted:
        return float(golden == predicted)
    same = sum((Counter(golden) & Counter(predicted)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(golden)
    return 2 * precision * recall / (precision + recall)


def raw_scores(golds: dict, predicted: dict) -> tuple[dict, dict]:
    """Per question, the best exact and F1 over its gold answers ([""] for an unanswerable question)."""
    exact, f1 = {}, {}
    for qid, answers in golds.items():
        answers = [answer for answer in answers if normalize_answer(answer)] or [""]
        exact[qid] = max(compute_exact(answer, predicted[qid]) for answer in answers)
        f1[qid] = max(compute_f1(answer, predicted[qid]) for answer in answers)
    return exact, f1


def apply_no_answer_threshold(scores: dict, no_answer_probs: dict, has_answer: dict, threshold: float) -> dict:
    """Scores where a no-answer probability above the threshold means predicting no answer."""
    return {qid: float(not has_answer[qid]) if no_answer_probs[qid] > threshold else score
            for qid, score in scores.items()}


def eval_dict(exact: dict, f1: dict, qids: list) -> dict:
    """exact, f1 (x100) and total over the given questions."""
    return {"exact": 100.0 * sum(exact[qid] for qid in qids) / len(qids),
            "f1": 100.0 * sum(f1[qid] for qid in qids) / len(qids), "total": len(qids)}


def best_threshold(predicted: dict, scores: dict, no_answer_probs: dict, has_answer: dict) -> tuple[float, float]:
    """The best score (x100) over no-answer probability thresholds, and that threshold."""
    score = best = sum(1 for qid in has_answer if not has_answer[qid])
    threshold = 0.0
    for qid in sorted(no_answer_probs, key=lambda k: no_answer_probs[k]):
        if qid not in scores:
            continue
        if has_answer[qid]:
            score += scores[qid]
        elif predicted[qid]:
            score -= 1
        if score > best:
            best, threshold = score, no_answer_probs[qid]
    return 100.0 * best / len(scores), threshold


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SquadV2(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({
                "predictions": {"id": datasets.Value("string"), "prediction_text": datasets.Value("string"),
                                "no_answer_probability": datasets.Value("float32")},
                "references": {"id": datasets.Value("string"),
                               "answers": {"text": datasets.List(datasets.Value("string")),
                                           "answer_start": datasets.List(datasets.Value("int32"))}},
            }),
            reference_urls=["https://rajpurkar.github.io/SQuAD-explorer/"],
        )

    def _compute(self, predictions, references, no_answer_threshold=1.0) -> dict:
        """As the official script: questions without a prediction are left out of every score."""
        predicted = {prediction["id"]: prediction["prediction_text"] for prediction in predictions}
        no_answer_probs = {prediction["id"]: prediction["no_answer_probability"] for prediction in predictions}
        has_answer = {reference["id"]: bool(reference["answers"]["text"]) for reference in references}
        golds = {reference["id"]: reference["answers"]["text"] for reference in references
                 if reference["id"] in predicted}
        exact_raw, f1_raw = raw_scores(golds, predicted)
        exact = apply_no_answer_threshold(exact_raw, no_answer_probs, has_answer, no_answer_threshold)
        f1 = apply_no_answer_threshold(f1_raw, no_answer_probs, has_answer, no_answer_threshold)
        results = eval_dict(exact, f1, list(exact))
        for prefix, wanted in (("HasAns", True), ("NoAns", False)):
            qids = [qid for qid in exact if has_answer[qid] is wanted]
            if qids:
                results.update({f"{prefix}_{key}": value for key, value in eval_dict(exact, f1, qids).items()})
        results["best_exact"], results["best_exact_thresh"] = best_threshold(predicted, exact_raw, no_answer_probs,
                                                                             has_answer)
        results["best_f1"], results["best_f1_thresh"] = best_threshold(predicted, f1_raw, no_answer_probs, has_answer)
        return results
