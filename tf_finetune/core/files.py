"""Atomic writes: a crash or kill leaves either the old file or the new one, never half of one."""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from tf_finetune.core.errors import UserError
from tf_finetune.core.layout import MODEL_CONFIG_FILE


def _read_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


_UMASK = _read_umask()  # read once: setting it is process-wide, so not while upload threads write files

def write_atomic(path: str, write: Callable[[str], None]) -> None:
    """Call write(temp_path) next to `path`, then move the result over `path` in one step."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temp_path = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    os.close(handle)
    try:
        write(temp_path)
        os.chmod(temp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(temp_path, path)
    finally:
        if os.path.exists(temp_path):
            os.remove(temp_path)


def check_output_dir(path: str) -> None:
    """Raise a UserError, leaving nothing behind, when output_dir cannot be written: a file, or a folder (or the
    nearest existing parent of a new one) where a file cannot be created."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"--output_dir {path} is a file, not a folder; pass a folder path.")
    existing = _nearest_existing(path)
    try:  # a real write: permissions alone miss read-only file systems and root's rights
        with tempfile.TemporaryFile(dir=existing, prefix=".tmp-write-check-"):
            pass
    except OSError as error:
        raise UserError(f"--output_dir {path} is not writable ({existing}: {error.strerror}); pass a folder you can "
                        "write to.") from error


def check_free_space(path: str, needed: int) -> None:
    """Raise a UserError when the disk holding `path` has less than `needed` bytes free."""
    existing = _nearest_existing(path)
    free = shutil.disk_usage(existing).free
    if free < needed:
        raise UserError(f"only {free / 1e9:.2f} GB free where --output_dir {path} is, and the checkpoints need "
                        f"about {needed / 1e9:.2f} GB (the model and its optimizer state, per checkpoint kept and "
                        "the one being written); free space, pick "
                        "another --output_dir, or pass --check_disk_space false.")


def _nearest_existing(path: str) -> str:
    """The path itself if it exists, else its nearest existing parent folder."""
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    return existing


def write_text(path: str, text: str) -> None:
    """Write a text file atomically."""
    def write(temp_path: str) -> None:
        with open(temp_path, "w", encoding="utf-8") as file:
            file.write(text)

    write_atomic(path, write)


def write_json(path: str, data: Any) -> None:
    """Write a JSON file atomically, indented and with a final newline."""
    write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str) -> Any:
    """Read a JSON file."""
    with open(path, encoding="utf-8") as file:
        return json.load(file)


def write_csv(path: str, rows: Sequence[Mapping[str, Any]], columns: Optional[Sequence[str]] = None) -> None:
    """Write rows as a CSV file atomically, under a header of `columns` (default: every key, in order of first
    appearance); keys outside the columns are left out."""
    columns = list(columns if columns is not None else dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


def read_mapping_file(path: str, description: str, flag: str) -> dict[str, Any]:
    """The mapping in a YAML (.yaml, .yml) or JSON file; a one-line UserError, naming the file as `description` and
    the option it was given to (`flag`), when it is missing, does not parse or holds something else."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"{description} {path} does not exist; pass the path of a .yaml or .json file to {flag}.")
    try:
        if file.suffix in (".yaml", ".yml"):
            import yaml

            values = yaml.safe_load(file.read_text()) or {}
        else:
            values = json.loads(file.read_text())
    except Exception as error:  # noqa: BLE001 - any parse error is the user's file
        raise UserError(f"{description} {path} is not valid {file.suffix.lstrip('.').upper()}: "
                        f"{str(error).strip().splitlines()[0]}") from None
    if not isinstance(values, dict):
        raise UserError(f"{description} {path} must hold a mapping of option names to values.")
    return values


def save_pretrained_atomic(output_dir: str, *savables: Any) -> None:
    """`save_pretrained` each object into a temporary folder, then move every file into output_dir.

    Files move one by one with os.replace, config.json last, so a reader never sees a config without its weights.
    A folder (e.g. adapter/) replaces the old one in two renames: the old one is moved aside, then removed.
    """
    os.makedirs(output_dir, exist_ok=True)
    staging = tempfile.mkdtemp(dir=output_dir, prefix=".tmp-save-")
    try:
        for savable in savables:
            savable.save_pretrained(staging)
        names = sorted(os.listdir(staging), key=lambda name: name == MODEL_CONFIG_FILE)
        for name in names:
            target = os.path.join(output_dir, name)
            if os.path.isdir(target):
                os.replace(target, os.path.join(staging, f".old-{name}"))
            os.replace(os.path.join(staging, name), target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_dir_atomic(path: str, write: Callable[[str], None]) -> None:
    """Call write(temp_folder) next to `path`, then put the folder in place of `path` (an old folder there is moved
    aside first and removed after): a reader sees the old folder or the new one whole, never a half-written one."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(dir=parent, prefix=f".tmp-{os.path.basename(path)}-")
    old = None
    try:
        write(staging)
        os.chmod(staging, 0o777 & ~_UMASK)  # mkdtemp makes 0700 folders; give the usual permissions
        if os.path.exists(path):
            old = tempfile.mkdtemp(dir=parent, prefix=f".old-{os.path.basename(path)}-")
            os.replace(path, os.path.join(old, "previous"))
        os.replace(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if old:
            shutil.rmtree(old, ignore_errors=True)
