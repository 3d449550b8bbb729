"""The run configuration: one flat, typed dataclass shared by the CLI, config files and notebooks."""
from __future__ import annotations

import dataclasses
import importlib.util
import os
from dataclasses import dataclass, field
from typing import Any, Optional

from tf_finetune.core.errors import UserError
from tf_finetune.core.fields import RANGE_FACTS, check_choices, check_ranges, check_types
from tf_finetune.core.files import read_mapping_file
from tf_finetune.core.logs import LOG_LEVELS
from tf_finetune.hub.client import is_repo_id

SECRET_FIELDS = ("hub_token",)
# Facts about a field, kept in its metadata (and kept out of argparse, which receives the rest):
#   changes_training: whether the field changes what training computes (False: a resumed run or search may differ)
#   tunable: whether a search may vary it
#   hyperparameter: whether it is one of the run's hyperparameters (see `hyperparameters`)
#   needs: a field that must be set (truthy) for it to apply, e.g. LoRA settings need lora_rank
#   choices and the range facts (tf_finetune.core.fields) are checked by validate(); argparse receives choices
FIELD_FACTS = {"changes_training": True, "tunable": True, "hyperparameter": False, "needs": None,
               **dict.fromkeys(RANGE_FACTS)}
# --report_to's default: TensorBoard, which ships with TensorFlow, when its package is there.
DEFAULT_REPORT_TO = ["tensorboard"] if importlib.util.find_spec("tensorboard") else ["none"]


def _arg(default: Any, help: str, *, changes_training: bool = True, tunable: bool = True,
         hyperparameter: bool = False, **metadata: Any) -> Any:
    """A dataclass field whose help text becomes the `--help` entry, with the field's facts (see FIELD_FACTS)."""
    metadata = {"help": help, "changes_training": changes_training, "tunable": tunable,
                "hyperparameter": hyperparameter, **metadata}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def field_fact(name: str, fact: str) -> Any:
    """A fact (see FIELD_FACTS) about the TrainConfig field `name`."""
    return _FIELDS[name].metadata.get(fact, FIELD_FACTS[fact])


def fields_where(fact: str, value: Any = True) -> list[str]:
    """Names of the TrainConfig fields whose `fact` is `value`, in declaration order."""
    return [name for name in _FIELDS if field_fact(name, fact) == value]


ALL_LINEAR = "all-linear"  # --lora_target_modules' shorthand for every Dense layer but the output and the head (PEFT's)


@dataclass
class TrainConfig:
    """Everything that defines a fine-tuning run. Field names follow the Hugging Face example scripts."""

    # What to train
    task: str = _arg("sst2", "Task name (the command line lists them here; `--list_tasks` describes each).",
                     tunable=False)
    model_name_or_path: str = _arg("distilbert-base-uncased", "Hub model id or local checkpoint directory.")
    tokenizer_name: Optional[str] = _arg(None, "Tokenizer id or path, if not the model's.")
    output_dir: str = _arg("output", "Where the model, results and checkpoints are written.",
                           changes_training=False, tunable=False)
    overwrite_output_dir: bool = _arg(False, "Start afresh even if output_dir holds a finished or interrupted run.",
                                      changes_training=False, tunable=False)

    # Data
    data_dir: Optional[str] = _arg(None, "GLUE data in its original distribution layout (SST-2/train.tsv, ...). "
                                   "Without it GLUE tasks load nyu-mll/glue from the Hub.")
    dataset_name: Optional[str] = _arg(None, "A Hub dataset to load instead of local files.")
    dataset_config_name: Optional[str] = _arg(None, "The Hub dataset's configuration name.")
    train_file: Optional[str] = _arg(None, "Training data: .csv, .tsv, .json/.jsonl, .parquet (or .txt for LM).")
    validation_file: Optional[str] = _arg(None, "Validation data, same formats as train_file.")
    test_file: Optional[str] = _arg(None, "Test data for --do_predict (labels optional).", changes_training=False)
    text_column: Optional[list[str]] = _arg(None, "One text column, or two for sentence pairs "
                                            "(e.g. --text_column premise hypothesis).", nargs="+")
    label_column: str = _arg("label", "Label column of your own data.")
    max_seq_length: int = _arg(128, "Longest tokenised input; longer inputs are truncated.", hyperparameter=True,
                               above=0)
    max_train_samples: Optional[int] = _arg(None, "Use only the first N training examples.", tunable=False, above=0)
    max_eval_samples: Optional[int] = _arg(None, "Use only the first N validation examples.", above=0)
    max_predict_samples: Optional[int] = _arg(None, "Use only the first N test examples.", above=0,
                                              changes_training=False)
    group_by_length: bool = _arg(True, "Batch training examples of similar length together (less padding): shuffle, "
                                 "sort by length inside windows of --length_grouping_window batches, shuffle the "
                                 "batches; a new order every epoch. False: batches of random examples.")
    length_grouping_window: int = _arg(10, "Batches per window that --group_by_length sorts by length (larger: less "
                                       "padding, less randomness).", above=0)
    overwrite_cache: bool = _arg(False, "Tokenise again instead of reusing the datasets cache.", changes_training=False)
    preprocessing_num_workers: Optional[int] = _arg(None, "Processes for tokenisation.", above=0,
                                                    changes_training=False)

    # Language modelling
    mlm_probability: float = _arg(0.15, "Share of tokens masked for masked language modelling.", hyperparameter=True,
                                  above=0, below=1)
    block_size: int = _arg(128, "Length of the token blocks that texts are concatenated and cut into (lowered, "
                           "with a warning, to the longest input the model accepts).", hyperparameter=True, above=0)
    line_by_line: bool = _arg(False, "Treat each line as one example (truncated to --block_size) instead of "
                              "concatenating texts.")

    # Token classification (ner)
    label_column_index: Optional[int] = _arg(None, "CoNLL files: the column (0-based) holding the tag (default: the "
                                             "last).", tunable=False, at_least=0, zero_means="the first column")
    label_all_tokens: bool = _arg(False, "Label every sub-word of a word with the word's tag, not only the first "
                                  "(the rest get -100 and are not scored).")
    return_entity_level_metrics: bool = _arg(False, "Also report precision, recall and F1 per entity type.",
                                             changes_training=False, tunable=False)

    # Extractive question answering (qa)
    doc_stride: int = _arg(128, "Tokens shared by consecutive windows when a context is longer than "
                           "--max_seq_length.", hyperparameter=True, above=0)
    max_answer_length: int = _arg(30, "Longest answer, in tokens, that post-processing accepts.", above=0)
    n_best_size: int = _arg(20, "Start and end logits considered per window when choosing the answer span.", above=0)
    version_2_with_negative: bool = _arg(False, "SQuAD v2.0: some questions have no answer in their context.",
                                         tunable=False)
    null_score_diff_threshold: float = _arg(0.0, "SQuAD v2.0: predict no answer when the null score beats the best "
                                            "span's by more than this.")
    skip_bad_answers: bool = _arg(False, "Drop (and count) training answers whose answer_start does not point at "
                                  "their text, instead of stopping.", tunable=False)

    # Multiple choice
    context_column: Optional[str] = _arg(None, "The column holding the context or question (default: sent1, else "
                                         "question).", tunable=False)
    choice_columns: Optional[list[str]] = _arg(None, "The columns holding the candidate endings (default: "
                                               "ending0..N, or a 'choices' list).", nargs="+")
    column_names: Optional[list[str]] = _arg(None, "Names for the columns of a CSV/TSV without a header row "
                                             "(CODAH's files have none).", nargs="+")

    # Chat (causal LMs)
    chat_template: Optional[str] = _arg(None, "A Jinja chat template file to render conversations with (default: "
                                        "the tokenizer's own template, else ChatML closing each turn with the "
                                        "tokenizer's end-of-sequence token).")
    train_on_prompt: bool = _arg(False, "Also train on the prompts' tokens (system and user turns and the template's "
                                 "markup), not only on the assistant's answers.", hyperparameter=True)
    packing: bool = _arg(False, "Pack several short training conversations into one row of up to --max_seq_length "
                         "tokens (each keeps its own loss mask).", hyperparameter=True)
    generation_eval: int = _arg(0, "After each epoch, answer the first N validation prompts and write the answers to "
                                "generations_epoch<k>.jsonl.", changes_training=False, tunable=False, at_least=0)
    max_new_tokens: int = _arg(64, "Longest answer --generation_eval generates, in tokens.", changes_training=False,
                               tunable=False, above=0)

    # Metrics and model selection
    metric: Optional[str] = _arg(None, "An evaluate metric (bundled name, local path or Hub id) for your own data.")
    metric_for_best_model: Optional[str] = _arg(None, "Validation metric that picks the best epoch "
                                                "(default: the task's main metric).")
    greater_is_better: Optional[bool] = _arg(None, "Whether a larger metric_for_best_model is better "
                                             "(default: inferred from the metric).")
    load_best_model_at_end: bool = _arg(True, "Restore the best epoch's weights before saving.", changes_training=False)
    early_stopping_patience: Optional[int] = _arg(None, "Stop after N epochs without improvement.", above=0)

    # LoRA
    lora_rank: int = _arg(0, "LoRA rank: train low-rank adapters on --lora_target_modules (and the modules to save) "
                          "instead of every weight; 0: full fine-tuning.", hyperparameter=True, needs="lora_rank",
                          at_least=0, zero_means="full fine-tuning")
    lora_alpha: Optional[float] = _arg(None, "LoRA alpha: the adapters' update is scaled by alpha/rank (default: "
                                       "twice the rank).", hyperparameter=True, needs="lora_rank", above=0)
    lora_dropout: Optional[float] = _arg(None, "Dropout on the adapters' inputs (default 0).", hyperparameter=True,
                                         needs="lora_rank", at_least=0, below=1)
    lora_target_modules: Optional[list[str]] = _arg(None, "Dense layers to adapt, matched against the end of their "
                                                    "module paths (default per architecture: BERT query value, "
                                                    "DistilBERT q_lin v_lin, Llama, Qwen, Gemma and Mistral q_proj "
                                                    "v_proj), or all-linear: every Dense layer but the output "
                                                    "layer and the task head, as PEFT's all-linear.", nargs="+",
                                                    hyperparameter=True, needs="lora_rank")
    modules_to_save: Optional[list[str]] = _arg(None, "Modules trained in full next to the adapters (default: the "
                                                "task head, e.g. classifier).", nargs="+", hyperparameter=True,
                                                needs="lora_rank")
    lora_merge: bool = _arg(True, "Save the model with the adapters merged into its weights (loadable with "
                            "from_pretrained); false: save the adapter and a reference to the base model only. "
                            "adapter/ holds the adapter in the PEFT format either way.",
                            changes_training=False, tunable=False)

    # Feature-extraction baseline (tf_finetune/training/baseline.py)
    features_baseline: bool = _arg(False, "Classification: before fine-tuning, encode the texts with the frozen "
                                   "pretrained encoder, fit scikit-learn's LogisticRegression on the training features "
                                   "(C chosen by cross-validation) and report its validation metrics as "
                                   "baseline_eval_* in all_results.json.", changes_training=False, tunable=False)
    pooling: str = _arg("cls", "Only for --features_baseline: a text's features are its [CLS] vector (cls) or the "
                        "mean of its tokens' vectors (mean, padding left out).", choices=["cls", "mean"],
                        changes_training=False, tunable=False)

    # Training
    do_train: bool = _arg(True, "Train the model.", tunable=False)
    do_eval: bool = _arg(True, "Evaluate on the validation split each epoch and at the end.", tunable=False)
    do_predict: bool = _arg(False, "Write predictions for the test split.", changes_training=False, tunable=False)
    num_train_epochs: int = _arg(3, "Number of epochs.", hyperparameter=True, above=0)
    per_device_train_batch_size: int = _arg(16, "Training batch size per device (replica).", above=0,
                                            hyperparameter=True)
    per_device_eval_batch_size: int = _arg(32, "Evaluation batch size per device (replica).", above=0,
                                           hyperparameter=True)
    gradient_accumulation_steps: int = _arg(1, "Micro-batches (of per_device_train_batch_size per replica) whose "
                                            "mean gradient makes one update.", hyperparameter=True, above=0)
    learning_rate: float = _arg(2e-5, "Peak learning rate of AdamWeightDecay.", hyperparameter=True, above=0)
    weight_decay: float = _arg(0.01, "Decoupled weight decay (not applied to LayerNorm and biases).", at_least=0,
                               hyperparameter=True)
    warmup_ratio: float = _arg(0.0, "Share of training steps for linear warm-up.", at_least=0, below=1,
                               hyperparameter=True)
    warmup_steps: int = _arg(0, "Warm-up steps (overrides warmup_ratio when > 0).", hyperparameter=True, at_least=0)
    adam_epsilon: float = _arg(1e-8, "Adam epsilon.", above=0)
    lazy_embedding_updates: bool = _arg(True, "Update only the embedding rows of the batch's tokens (lazy Adam): "
                                        "much faster steps on short inputs.", hyperparameter=True)
    max_grad_norm: float = _arg(1.0, "Global gradient clipping norm (0 disables clipping).", at_least=0,
                                zero_means="no clipping", hyperparameter=True)
    seed: int = _arg(42, "Random seed for weights, shuffling and masking.", hyperparameter=True)
    verbose: int = _arg(1, "Training progress: 0 none, 1 Keras' progress bar on a terminal (elsewhere, a line every "
                        "10%% of an epoch or every 30 seconds), 2 one line per epoch.", changes_training=False,
                        tunable=False, choices=[0, 1, 2])
    log_level: str = _arg("info", "Messages shown: debug adds the libraries' own (transformers' notices; TensorFlow's "
                          "start-up lines when given as a flag), info the run's progress and results, warning and "
                          "error only problems.",
                          choices=list(LOG_LEVELS), changes_training=False, tunable=False)

    # Checkpoints and faults
    save_strategy: str = _arg("epoch", "When to write a checkpoint: after every epoch, also every --save_steps "
                              "optimizer steps (steps), or never (no: a killed run cannot resume).",
                              choices=["epoch", "steps", "no"], changes_training=False, tunable=False)
    save_steps: int = _arg(500, "With --save_strategy steps: optimizer steps between checkpoints.",
                           changes_training=False, tunable=False, above=0)
    save_total_limit: Optional[int] = _arg(2, "Checkpoints kept (the newest); None keeps them all.",
                                           changes_training=False, tunable=False, above=0)
    resume_from_checkpoint: Optional[str] = _arg(None, "A checkpoint folder (output_dir/checkpoint/checkpoint-N) to "
                                                 "resume from, instead of the newest valid one.",
                                                 changes_training=False, tunable=False)
    save_on_signal: bool = _arg(True, "On SIGTERM or SIGINT (preemption, Ctrl-C): finish the current step, write a "
                                "checkpoint and exit (143 / 130).", changes_training=False, tunable=False)
    check_disk_space: bool = _arg(True, "Before training, check that output_dir's disk has free space for the "
                                  "checkpoints kept (model and optimizer state each, plus the one being written).",
                                  changes_training=False, tunable=False)

    # Experiment trackers and the per-step log (tf_finetune.training.trackers, tf_finetune.training.step_log)
    report_to: list[str] = _arg(DEFAULT_REPORT_TO, "Experiment trackers to send the run's configuration, "
                                "per-step and per-epoch scalars, final results (and, for MLflow, the model) to: "
                                "tensorboard (logs in --logging_dir), mlflow (MLFLOW_TRACKING_URI, else "
                                "OUTPUT_DIR/mlruns), wandb (offline into OUTPUT_DIR/wandb unless logged in), all "
                                "(every installed one) or none. Default: tensorboard when installed, else none.",
                                nargs="+", choices=["none", "tensorboard", "mlflow", "wandb", "all"],
                                changes_training=False, tunable=False)
    logging_steps: int = _arg(10, "Optimizer steps between records of the training loss and learning rate "
                              "(log_history.json and the trackers). 10, not the Hugging Face Trainer's 500, so "
                              "a one-epoch run of ~60 steps still draws a curve.", changes_training=False,
                              tunable=False, above=0)
    logging_dir: Optional[str] = _arg(None, "TensorBoard log folder (default: OUTPUT_DIR/runs; a search puts each "
                                      "trial's in a trial_<id> folder inside it).", changes_training=False,
                                      tunable=False)

    # Hub
    push_to_hub: bool = _arg(False, "Upload the model, results and a model card to the Hub.",
                             changes_training=False, tunable=False)
    hub_model_id: Optional[str] = _arg(None, "Repository id (default: <user>/<output_dir name>).",
                                       changes_training=False, tunable=False)
    hub_token: Optional[str] = field(default=None, repr=False, metadata={
        "help": "Hub token (default: HF_TOKEN or the saved login). Never saved or shown.", "changes_training": False,
        "tunable": False})
    base_model_id: Optional[str] = _arg(None, "The Hub id of the model fine-tuned, for the model card, when "
                                        "--model_name_or_path is a local folder (default: the id found in that "
                                        "checkpoint's own card or config; a local path never goes into a card).",
                                        changes_training=False, tunable=False)
    hub_private_repo: bool = _arg(False, "Create the repository as private.", changes_training=False, tunable=False)
    hub_strategy: str = _arg("end", "When to upload: after every epoch or only at the end.", choices=["epoch", "end"],
                             changes_training=False, tunable=False)

    # Export (tf_finetune/export.py)
    hub_export: str = _arg("none", "Also write PyTorch weights (PyTorch parameter names, loadable by transformers v5) "
                           "into output_dir/pytorch/ at the end, uploaded with --push_to_hub; load them with "
                           "from_pretrained(repo, subfolder=\"pytorch\").", choices=["none", "pytorch"],
                           changes_training=False, tunable=False)

    # Hyperparameter search
    tune: Optional[str] = _arg(None, "Run a KerasTuner search first.", choices=["random", "bayesian", "hyperband"],
                               tunable=False)
    max_trials: int = _arg(10, "Number of trials of the search.", changes_training=False, tunable=False, above=0)
    tune_train_fraction: float = _arg(1.0, "Share of the training data used during the search.", above=0, at_most=1,
                                      tunable=False)
    tune_objective: Optional[str] = _arg(None, "Metric the search optimises (default: the task's main metric).",
                                         tunable=False)
    tune_dir: Optional[str] = _arg(None, "Where the search state lives (default: <output_dir>/tuning).",
                                   changes_training=False, tunable=False)
    tune_space: Optional[str] = _arg(None, "YAML/JSON file with the search space.",
                                     changes_training=False, tunable=False)
    tune_retrain: bool = _arg(True, "Retrain the best configuration on the full training set.",
                              changes_training=False, tunable=False)

    # Hardware
    strategy: str = _arg("auto", "Distribution strategy. auto: a TPU if one is reachable, else multi-worker when "
                         "TF_CONFIG names several workers, else all local GPUs when there are several, else the "
                         "default device.", choices=["auto", "cpu", "gpu", "mirrored", "multi_worker", "tpu"],
                         tunable=False, hyperparameter=True)
    tpu: Optional[str] = _arg(None, "TPU name or address (default: Colab's local TPU).", tunable=False)
    mixed_precision: str = _arg("no", "Mixed precision policy.", choices=["no", "fp16", "bf16"], hyperparameter=True)
    jit_compile: bool = _arg(False, "Compile the training step with XLA (off for multi-replica mirrored runs).")
    gradient_checkpointing: bool = _arg(False, "Keep only each decoder layer's input for the backward pass, which "
                                        "runs the layer again: less memory for about one more forward pass of "
                                        "compute (PyTorch's gradient checkpointing; tf-finetune's Llama, Qwen and "
                                        "Gemma classes).", changes_training=False, tunable=False)
    pad_to_multiple_of: Optional[int] = _arg(None, "Pad batches to a multiple of N tokens (default 64 with XLA or on "
                                             "TPUs, else none; 1 pads to each batch's longest).", above=0)

    def __post_init__(self) -> None:
        for name, value in vars(self).items():  # accept pathlib paths wherever a path goes
            if isinstance(value, os.PathLike):
                setattr(self, name, os.fspath(value))
        if isinstance(self.report_to, str):  # report_to: tensorboard in a config file, as the HF Trainer takes it
            self.report_to = [self.report_to]

    def validate(self) -> None:
        """Check values that need no model or data; raise UserError naming the field and the fix."""
        check_types(self)
        check_choices(self)
        check_ranges(self)
        self._check_lora()
        if self.pooling != "cls" and not self.features_baseline:
            raise UserError(f"--pooling {self.pooling} only applies to the features baseline; pass --features_baseline "
                            "too, or drop --pooling.")
        if self.features_baseline and not self.do_eval:
            raise UserError("--features_baseline is scored on the validation split; drop --do_eval false or "
                            "--features_baseline.")
        if self.base_model_id is not None and not is_repo_id(self.base_model_id):
            raise UserError(f"--base_model_id must be a Hub model id such as sentence-transformers/all-MiniLM-L6-v2, "
                            f"got {self.base_model_id!r}; it names the base model in the model card.")
        if self.text_column is not None and not 1 <= len(self.text_column) <= 2:
            raise UserError(f"--text_column takes one or two column names, got {len(self.text_column)}.")

    def _check_lora(self) -> None:
        if self.gradient_checkpointing and self.lora_dropout:
            raise UserError(f"--gradient_checkpointing runs each layer again in the backward pass, which would draw "
                            f"new --lora_dropout masks; pass --lora_dropout 0 (got {self.lora_dropout}) or drop "
                            "--gradient_checkpointing.")
        if self.lora_rank == 0:
            given = [name for name in ("lora_alpha", "lora_dropout", "lora_target_modules", "modules_to_save")
                     if getattr(self, name) is not None] + ([] if self.lora_merge else ["lora_merge"])
            if given:
                raise UserError(f"--{given[0]} is a LoRA setting, but --lora_rank is 0 (LoRA off); pass "
                                "--lora_rank 8 (or another rank) to train LoRA adapters.")
            return
        if self.lora_target_modules is not None and not self.lora_target_modules:
            raise UserError("--lora_target_modules needs at least one module name.")
        if ALL_LINEAR in (self.lora_target_modules or []) and len(self.lora_target_modules) > 1:
            raise UserError(f"--lora_target_modules {ALL_LINEAR} stands alone; pass it, or module names, not both.")

    def to_dict(self) -> dict[str, Any]:
        """The configuration as plain data, without secrets: what gets saved next to a run."""
        values = dataclasses.asdict(self)
        for name in SECRET_FIELDS:
            values.pop(name)
        return values

    def max_samples(self, split: str) -> Optional[int]:
        """The --max_*_samples limit of a split (train, validation or test); None: all examples."""
        return {"train": self.max_train_samples, "validation": self.max_eval_samples,
                "test": self.max_predict_samples}.get(split)

    @classmethod
    def from_file(cls, path: str, **changes: Any) -> "TrainConfig":
        """The configuration in a YAML or JSON file (e.g. a run's run_config.json), with `changes` applied."""
        return cls(**{**load_config_file(path), **changes})

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


_FIELDS = {spec.name: spec for spec in dataclasses.fields(TrainConfig)}


def field_choices(name: str) -> tuple[Any, ...]:
    """The values the TrainConfig field `name` takes (empty: any value of its type)."""
    return tuple(_FIELDS[name].metadata.get("choices") or ())


def load_config_file(path: str) -> dict[str, Any]:
    """Read a YAML or JSON file of TrainConfig fields."""
    values = read_mapping_file(path, "config file", "--config")
    unknown = sorted(set(values) - set(_FIELDS))
    if unknown:
        raise UserError(f"config file {path} has unknown option(s) {', '.join(unknown)}; see --help for the names.")
    return values
