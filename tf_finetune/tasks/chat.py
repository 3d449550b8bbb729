"""Chat fine-tuning of causal LMs: conversations rendered with the tokenizer's chat template, the loss on the
assistant's answers only.

Data (JSON Lines, JSON, or a Hub dataset), one conversation per row in one of these layouts:
- `messages`: a list of {role, content} turns, roles system / user / assistant, as many turns as you like;
- `prompt` and `completion` (TRL's layout; either may also be a list of turns);
- `instruction`, `input` and `output` (Alpaca's layout), with LLaMA-Factory's optional `history` of earlier
  [user, assistant] turns (LIMA);
- any two columns named by --text_column PROMPT ANSWER (e.g. GSM8K's question answer).
Tokens are labelled where the template renders an assistant turn (its end-of-turn marker included), -100 elsewhere.
A tokenizer without a chat template gets DEFAULT_CHAT_TEMPLATE, or --chat_template FILE.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
from typing import TYPE_CHECKING, Any, Optional, Sequence

import datasets
import numpy as np
import tf_keras

from tf_finetune.core.errors import UserError
from tf_finetune.core.files import write_text
from tf_finetune.core.layout import generations_file
from tf_finetune.data.files import limit_samples, load_data_file, load_hub_dataset
from tf_finetune.models.generation import generate_answers
from tf_finetune.tasks.base import TaskSplit, read_text_inputs
from tf_finetune.tasks.language_modeling import IGNORE_INDEX, CausalLanguageModelingTask, split_off_validation

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase, TFPreTrainedModel

    from tf_finetune.config import TrainConfig

logger = logging.getLogger(__name__)

ROLES = ("system", "user", "assistant")
MESSAGES = "messages"
INDEX = "example_index"  # bookkeeping: the conversation's row in its file, for --generation_eval's order
# ChatML (the layout of SmolLM2, Qwen and others), each turn closed by the tokenizer's end-of-sequence token, so a
# model that learns it stops generating at the end of its answer.
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + eos_token "
    "+ '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
_FILE_TYPES = (".json", ".jsonl", ".parquet")


class ChatTask(CausalLanguageModelingTask):
    """Supervised fine-tuning on conversations: eval_loss and perplexity are over the answers' tokens."""

    name = predict_name = "chat"
    option_fields = ("max_seq_length", "train_on_prompt", "packing")
    description = "chat / instruction fine-tuning of causal LMs, with the loss on the assistant's answers"
    data_formats = (".json/.jsonl/.parquet or --dataset_name with messages (role, content), or prompt/completion, "
                    "or instruction/input/output (Alpaca, optional history), or --text_column PROMPT ANSWER")
    reported_metrics = "eval_loss (per answer token), perplexity; generations_epoch<k>.jsonl with --generation_eval"

    def builds_architecture(self, architecture: str) -> bool:
        """Never guessed from an architecture: a causal LM's predictions are clm's unless its run says chat."""
        return False

    def load_raw_datasets(self, config: "TrainConfig") -> datasets.DatasetDict:
        """train / validation splits with one `messages` column of checked conversations."""
        if config.do_predict:
            raise UserError("chat writes no test predictions; drop --do_predict and use `python -m "
                            "tf_finetune.predict --task chat` on the saved model.")
        if config.dataset_name:
            hub = load_hub_dataset(config.dataset_name, config.dataset_config_name)
            raw = {split: hub[split] for split in ("train", "validation") if split in hub}
        else:
            if config.do_train and not config.train_file:
                raise UserError(f"chat needs --train_file ({', '.join(_FILE_TYPES)} with one conversation per row) "
                                "or --dataset_name.")
            files = {"train": config.train_file, "validation": config.validation_file}
            raw = {split: load_data_file(path, split, allowed=_FILE_TYPES) for split, path in files.items() if path}
        if not raw:
            raise UserError("chat has no data: pass --train_file and/or --validation_file.")
        conversations = {split: _conversations(limit_samples(dataset, config.max_samples(split)), split,
                                               config.text_column, config.overwrite_cache)
                         for split, dataset in raw.items()}
        if "validation" not in conversations and config.do_eval:
            conversations.update(split_off_validation(conversations["train"], config))
        return datasets.DatasetDict(conversations)

    def tokenize(self, raw_datasets: datasets.DatasetDict, tokenizer: "PreTrainedTokenizerBase",
                 config: "TrainConfig") -> dict[str, TaskSplit]:
        """Each conversation rendered and tokenised, labelled on its answers and cut to --max_seq_length from the
        left (the history goes first; a cut into the final answer is counted and reported)."""
        self.prepare_tokenizer(tokenizer, config)
        set_chat_template(tokenizer, config.chat_template)
        splits = {}
        for split, dataset in raw_datasets.items():
            features = dataset.map(
                _encode, batched=True, with_indices=True, load_from_cache_file=not config.overwrite_cache,
                num_proc=config.preprocessing_num_workers, desc=f"Rendering and tokenising {split}",
                fn_kwargs={"tokenizer": tokenizer, "max_length": config.max_seq_length, "split": split,
                           "label_prompts": config.train_on_prompt and split == "train"})
            features = _drop_unanswered(features, split, config)
            if split == "train" and config.packing:
                splits[split] = TaskSplit(examples=features, features=pack(features, config.max_seq_length,
                                                                           config.per_device_train_batch_size))
            else:
                splits[split] = TaskSplit(examples=features, features=features)
        return splits

    def training_callbacks(self, tokenizer: "PreTrainedTokenizerBase", splits: dict[str, TaskSplit],
                           config: "TrainConfig") -> list[tf_keras.callbacks.Callback]:
        if not config.generation_eval or "validation" not in splits:
            return []
        examples = splits["validation"].examples  # sorted by length: take the first N of the file
        first = np.argsort(examples[INDEX], kind="stable")[:config.generation_eval]
        return [GenerationSamples(tokenizer, examples.select(first)[MESSAGES], config.output_dir,
                                  config.max_new_tokens, config.per_device_eval_batch_size)]

    def add_predict_arguments(self, parser: argparse.ArgumentParser) -> None:
        from transformers.hf_argparser import string_to_bool

        super().add_predict_arguments(parser)
        parser.add_argument("--system", help="chat: a system message put before each conversation.")
        parser.add_argument("--temperature", type=float, default=0.0,
                            help="chat: sampling temperature (0: greedy, the most likely answer).")
        parser.add_argument("--top_p", type=float, default=1.0, help="chat: nucleus sampling's probability mass.")
        parser.add_argument("--jit_compile", type=string_to_bool, nargs="?", const=True, default=True,
                            help="chat: generate through XLA, which compiles once per prompt length (padded to a "
                            "multiple of 64) and then runs many times faster than eager generation; false: eagerly, "
                            "sooner for one short answer (default: %(default)s).")

    def predict_inputs(self, args: argparse.Namespace, tokenizer: "PreTrainedTokenizerBase") -> list[list[dict]]:
        """Conversations to answer: each TEXT as a user turn, then --file's rows (a .jsonl/.json of conversations
        in any training layout, their final answers left out; any other file: one user turn per line)."""
        if args.max_new_tokens <= 0 or args.temperature < 0 or not 0 < args.top_p <= 1:
            raise UserError(f"--max_new_tokens must be positive, --temperature 0 or more and --top_p in (0, 1]; got "
                            f"{args.max_new_tokens}, {args.temperature} and {args.top_p}.")
        json_file = args.file if args.file and args.file.lower().endswith((".json", ".jsonl")) else None
        texts = [text for text in args.texts if text.strip()] if json_file else read_text_inputs(args.texts, args.file)
        conversations = [[{"role": "user", "content": text}] for text in texts]
        if json_file:
            if not os.path.isfile(json_file):
                raise UserError(f"--file {json_file} does not exist; pass a .jsonl file with one conversation per "
                                "line.")
            rows = _conversations(load_data_file(json_file, "predict", allowed=(".json", ".jsonl")), "--file",
                                  need_answer=False)
            conversations += [prompt_of(turns) for turns in rows[MESSAGES]]
        if args.system:
            conversations = [[{"role": "system", "content": args.system}, *turns] for turns in conversations]
        return conversations

    def predict_lines(self, model: "TFPreTrainedModel", tokenizer: "PreTrainedTokenizerBase",
                      inputs: list[list[dict]], args: argparse.Namespace) -> list[str]:
        """Each conversation's next assistant answer (an empty one said in words, so every input gets a line)."""
        answers = generate_answers(model, tokenizer, inputs, args.max_new_tokens, args.batch_size,
                                   temperature=args.temperature, top_p=args.top_p, jit_compile=args.jit_compile)
        return [answer or "(empty answer: the model ended its turn at once)" for answer in answers]


class GenerationSamples(tf_keras.callbacks.Callback):
    """After each epoch, answers the validation prompts into generations_epoch<k>.jsonl (prompt, reference, answer)."""

    def __init__(self, tokenizer: "PreTrainedTokenizerBase", conversations: list[list[dict]], output_dir: str,
                 max_new_tokens: int, batch_size: int):
        super().__init__()
        self.tokenizer, self.output_dir = tokenizer, output_dir
        self.prompts = [prompt_of(turns) for turns in conversations]
        self.references = [turns[_last_answer(turns)]["content"] for turns in conversations]
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
        answers = generate_answers(self.model, self.tokenizer, self.prompts, self.max_new_tokens, self.batch_size)
        rows = [{"prompt": prompt, "reference": reference, "generated": answer}
                for prompt, reference, answer in zip(self.prompts, self.references, answers)]
        path = os.path.join(self.output_dir, generations_file(epoch + 1))
        write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        logger.info("Wrote %d generated answers to %s.", len(rows), path)


def set_chat_template(tokenizer: "PreTrainedTokenizerBase", path: Optional[str]) -> None:
    """Give the tokenizer the template conversations are rendered with (it is saved with the tokenizer)."""
    if path:
        if not os.path.isfile(path):
            raise UserError(f"--chat_template {path} does not exist; pass a Jinja template file.")
        with open(path, encoding="utf-8") as file:
            tokenizer.chat_template = file.read()
    elif not tokenizer.chat_template:
        logger.info("The tokenizer has no chat template: using ChatML with %r closing each turn "
                    "(tf_finetune.tasks.chat.DEFAULT_CHAT_TEMPLATE).", tokenizer.eos_token)
        tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE


def prompt_of(turns: Sequence[dict]) -> list[dict]:
    """A conversation up to its final answer (all of it when it ends with another role's turn)."""
    turns = list(turns)
    return turns[:-1] if turns and turns[-1]["role"] == "assistant" else turns


def pack(features: datasets.Dataset, max_length: int, batch_size: int) -> datasets.Dataset:
    """Conversations concatenated in order into rows of at most max_length tokens, each keeping its labels; logs the
    padding saved (batches of batch_size in order, padded to their longest row, before and after)."""
    rows: list[dict[str, list[int]]] = []
    for input_ids, labels in zip(features["input_ids"], features["labels"]):
        if not rows or len(rows[-1]["input_ids"]) + len(input_ids) > max_length:
            rows.append({"input_ids": [], "labels": []})
        rows[-1]["input_ids"] += input_ids
        rows[-1]["labels"] += labels
    packed = datasets.Dataset.from_list([{**row, "attention_mask": [1] * len(row["input_ids"])} for row in rows])
    before, after = (_padding([len(ids) for ids in split["input_ids"]], batch_size) for split in (features, packed))
    logger.info("Packing: %d conversations in %d rows of up to %d tokens; padding in batches of %d: %d tokens "
                "instead of %d (%.0f%% less).", len(features), len(packed), max_length, batch_size, after, before,
                100 * (before - after) / before if before else 0.0)
    return packed


def _padding(lengths: list[int], batch_size: int) -> int:
    """Padding tokens when consecutive rows are batched and padded to each batch's longest."""
    total = 0
    for start in range(0, len(lengths), batch_size):
        batch = lengths[start:start + batch_size]
        total += max(batch) * len(batch) - sum(batch)
    return total


def _conversations(dataset: datasets.Dataset, split: str, text_columns: Optional[list[str]] = None,
                   overwrite_cache: bool = False, need_answer: bool = True) -> datasets.Dataset:
    """The split as `messages` (list of {role, content}) and its row index, from any supported layout, checked."""
    layout = _layout(dataset.column_names, split, text_columns)
    return dataset.map(_to_messages, batched=True, with_indices=True, remove_columns=dataset.column_names,
                       load_from_cache_file=not overwrite_cache, desc=f"Reading {split} conversations",
                       fn_kwargs={"layout": layout, "split": split, "need_answer": need_answer})


def _layout(columns: list[str], split: str, text_columns: Optional[list[str]]) -> Optional[tuple[str, str]]:
    """The (prompt, answer) columns --text_column names, or None: each row is read in whichever of chat's layouts
    it fills (a file may mix them); a UserError when the columns hold none of them."""
    if text_columns:
        if len(text_columns) != 2:
            raise UserError(f"chat reads --text_column PROMPT ANSWER (two columns), got {' '.join(text_columns)}.")
        missing = [column for column in text_columns if column not in columns]
        if missing:
            raise UserError(f"the {split} data has no column {missing[0]}; its columns are "
                            f"{', '.join(sorted(columns))}.")
        return text_columns[0], text_columns[1]
    if MESSAGES in columns or "prompt" in columns or "instruction" in columns:
        return None
    raise UserError(f"the {split} data has none of chat's layouts (messages; prompt and completion; instruction, "
                    f"input and output); its columns are {', '.join(sorted(columns))}: rename them or pass "
                    "--text_column PROMPT ANSWER.")


def _to_messages(batch: dict[str, list], indices: list[int], layout: Optional[tuple[str, str]], split: str,
                 need_answer: bool) -> dict[str, list]:
    rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
    turns = [_turns(row, layout) for row in rows]
    for conversation, index in zip(turns, indices):
        _check_conversation(conversation, split, index, need_answer)
    return {MESSAGES: [[{"role": turn["role"], "content": turn["content"]} for turn in conversation]
                       for conversation in turns], INDEX: indices}


def _turns(row: dict, layout: Optional[tuple[str, str]]) -> Any:
    """A row's conversation, from the columns it fills (`messages` as it is, to be checked)."""
    if layout:
        return _prompt_answer(row[layout[0]], row[layout[1]])
    if row.get(MESSAGES) is not None:
        return row[MESSAGES]
    if row.get("prompt") is not None:
        return _prompt_answer(row["prompt"], row.get("completion"))
    if row.get("instruction") is not None:
        return _alpaca(row)
    return None


def _prompt_answer(prompt: Any, answer: Any) -> list[dict]:
    """Turns from a prompt and an answer (none: a prompt to answer), each a text or already a list of turns."""
    prompt_turns = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
    answer_turns = [] if answer is None else answer if isinstance(answer, list) else \
        [{"role": "assistant", "content": answer}]
    return [*prompt_turns, *answer_turns]


def _alpaca(row: dict) -> list[dict]:
    """Turns from an Alpaca row: the earlier [user, assistant] pairs of `history`, then instruction + input."""
    turns = []
    for pair in row.get("history") or []:
        turns += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    prompt = (row["instruction"] or "") + (f"\n\n{row['input']}" if row.get("input") else "")
    answer = [] if row.get("output") is None else [{"role": "assistant", "content": row["output"]}]
    return [*turns, {"role": "user", "content": prompt}, *answer]


def _check_conversation(conversation: Any, split: str, index: int, need_answer: bool) -> None:
    where = f"{split} example {index}"
    if conversation is None:
        raise UserError(f"{where} fills none of chat's layouts (messages; prompt and completion; instruction and "
                        "output); fill one of them.")
    if not isinstance(conversation, list) or not conversation:
        raise UserError(f"{where}: messages must be a non-empty list of {{role, content}} turns, got "
                        f"{type(conversation).__name__}.")
    for turn in conversation:
        if not isinstance(turn, dict) or "role" not in turn or "content" not in turn:
            raise UserError(f"{where}: each turn must have a role and a content, got {turn!r}"[:200])
        if turn["role"] not in ROLES:
            raise UserError(f"{where}: unknown role {turn['role']!r}; roles are {', '.join(ROLES)}.")
        if not isinstance(turn["content"], str):
            raise UserError(f"{where}: a turn's content must be text, got {type(turn['content']).__name__}.")
    if need_answer and not any(turn["role"] == "assistant" for turn in conversation):
        raise UserError(f"{where} has no assistant turn, so nothing to learn; give each conversation an answer.")


def _last_answer(turns: Sequence[dict]) -> int:
    return max(i for i, turn in enumerate(turns) if turn["role"] == "assistant")


def _answer_spans(tokenizer: "PreTrainedTokenizerBase", turns: list[dict], where: str) -> tuple[str, list[tuple]]:
    """The rendered conversation and the character spans of its assistant turns (each from after the template's
    assistant header to the end of the turn, end-of-turn marker included)."""
    def render(part: list[dict], generation_prompt: bool = False) -> str:
        try:
            return tokenizer.apply_chat_template(part, tokenize=False, add_generation_prompt=generation_prompt)
        except Exception as error:  # noqa: BLE001 - a template's failure on the user's data
            raise UserError(f"the chat template cannot render {where}: {error}".splitlines()[0]) from error

    text, spans = render(turns), []
    for i, turn in enumerate(turns):
        if turn["role"] != "assistant":
            continue
        before, through = render(turns[:i], generation_prompt=True), render(turns[:i + 1])
        if not (text.startswith(through) and through.startswith(before)):
            raise UserError(f"the chat template does not render {where} turn by turn (a conversation's beginning "
                            "renders differently on its own), so its answers cannot be found; pass another "
                            "--chat_template.")
        spans.append((len(before), len(through)))
    return text, spans


def _encode(batch: dict[str, list], indices: list[int], tokenizer: "PreTrainedTokenizerBase", max_length: int,
            split: str, label_prompts: bool) -> dict[str, list]:
    """input_ids, attention_mask and labels per conversation, plus how many answer tokens survive the cut and whether
    the final answer was cut."""
    out: dict[str, list] = {"input_ids": [], "attention_mask": [], "labels": [], "answer_tokens": [],
                            "answer_truncated": []}
    for turns, index in zip(batch[MESSAGES], batch[INDEX]):
        text, spans = _answer_spans(tokenizer, turns, f"{split} example {index}")
        encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        ids = encoding["input_ids"]
        in_answer = [any(start <= begin < end for start, end in spans) for begin, _ in encoding["offset_mapping"]]
        final_start = next((i for i, (begin, _) in enumerate(encoding["offset_mapping"])
                            if spans[-1][0] <= begin < spans[-1][1]), len(ids))
        cut = max(0, len(ids) - max_length)
        labels = [token if (answer or label_prompts) else IGNORE_INDEX for token, answer in zip(ids, in_answer)]
        out["input_ids"].append(ids[cut:])
        out["attention_mask"].append([1] * (len(ids) - cut))
        out["labels"].append(labels[cut:])
        out["answer_tokens"].append(sum(in_answer[cut:]))
        out["answer_truncated"].append(cut > final_start)
    return out


def _drop_unanswered(features: datasets.Dataset, split: str, config: "TrainConfig") -> datasets.Dataset:
    """Drop (and count) conversations left with no answer token by the cut; warn about cut final answers."""
    truncated = int(np.sum(np.array(features["answer_truncated"]) & (np.array(features["answer_tokens"]) > 0)))
    if truncated:
        logger.warning("%d of %d %s conversations are longer than --max_seq_length %d where their final answer "
                       "begins: cut from the left into that answer. Raise --max_seq_length to keep them whole.",
                       truncated, len(features), split, config.max_seq_length)
    kept = features.filter(lambda counts: [count > 0 for count in counts], input_columns="answer_tokens",
                           batched=True, load_from_cache_file=not config.overwrite_cache)
    if len(kept) < len(features):
        logger.warning("Dropped %d %s conversations with no answer token within --max_seq_length %d.",
                       len(features) - len(kept), split, config.max_seq_length)
    if len(kept) == 0:
        raise UserError(f"no {split} conversation has an answer token within --max_seq_length "
                        f"{config.max_seq_length}; raise it.")
    return kept


TASKS = (ChatTask(),)
