"""Resuming an interrupted run, and clearing a finished one for --overwrite_output_dir."""
from __future__ import annotations

import os
import shutil

from tf_finetune.config import TrainConfig, field_fact
from tf_finetune.core.errors import UserError
from tf_finetune.core.files import read_json
from tf_finetune.core.layout import RESULTS_FILE, RUN_CONFIG_FILE, entry_of
from tf_finetune.runtime.checkpoints import RunState, latest_checkpoint, read_checkpoint_state


def resume_state(config: TrainConfig, checkpoint_dir: str) -> RunState:
    """The state to start from: fresh, or an interrupted run's, whose settings must match; never a finished run's."""
    output_dir = config.output_dir
    if config.overwrite_output_dir:
        return RunState()
    if os.path.isfile(os.path.join(output_dir, RESULTS_FILE)):
        raise UserError(f"{output_dir} already holds a finished run ({RESULTS_FILE}); pass --overwrite_output_dir "
                        "or another --output_dir.")
    if config.resume_from_checkpoint:
        state = read_checkpoint_state(config.resume_from_checkpoint)
    else:
        folder = latest_checkpoint(checkpoint_dir)
        state = read_checkpoint_state(folder, checked=True) if folder else None
    saved_config = os.path.join(output_dir, RUN_CONFIG_FILE)
    if state and os.path.isfile(saved_config):
        saved, current = read_json(saved_config), config.to_dict()
        changed = [name for name in current
                   if field_fact(name, "changes_training") and saved.get(name) != current[name]]
        if changed:
            name = changed[0]
            raise UserError(f"{output_dir} holds an interrupted run with other settings ({name}: {saved.get(name)!r} "
                            f"then, {current[name]!r} now); rerun it as it was to resume, or pass "
                            "--overwrite_output_dir.")
    return state or RunState()


def remove_previous_run(output_dir: str) -> None:
    """Remove every output of an earlier run from output_dir: the layout's entries that `--overwrite_output_dir`
    replaces (checkpoints, results, predictions, model card, weights and adapter: a run saved as config + adapter
    must not find an earlier run's weights beside it). Stores kept across runs and a search's files stay."""
    if not os.path.isdir(output_dir):
        return
    for name in os.listdir(output_dir):
        entry, path = entry_of(name), os.path.join(output_dir, name)
        if entry is None or not entry.overwritten:
            continue
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)
