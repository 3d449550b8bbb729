"""Upload a finished output directory to the Hub: `python -m tf_finetune.push OUTPUT_DIR --hub_model_id ID`.

Used when a run could not upload at the end of training (the Hub was down, no token yet), or to push a run later.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Optional, Sequence

from tf_finetune.cli import run_cli
from tf_finetune.config import field_choices
from tf_finetune.core.errors import UserError
from tf_finetune.core.layout import MODEL_CARD_FILE, MODEL_CONFIG_FILE
from tf_finetune.hub.client import Retry, check_push_access, error_summary, resolve_token, upload_output_dir

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """The command line of `python -m tf_finetune.push`."""
    parser = argparse.ArgumentParser(prog="python -m tf_finetune.push", description=__doc__.splitlines()[0])
    parser.add_argument("output_dir", help="The run's output directory (holds config.json and the weights).")
    parser.add_argument("--hub_model_id", help="Repository id (default: <user>/<output_dir name>).")
    parser.add_argument("--hub_token", help="Hub token (default: HF_TOKEN or the saved login).")
    parser.add_argument("--hub_private_repo", action="store_true", help="Create the repository as private.")
    parser.add_argument("--hub_export", choices=field_choices("hub_export"), default="none",
                        help="pytorch: first write PyTorch weights into OUTPUT_DIR/pytorch/ (loadable by transformers "
                        "v5 with subfolder=\"pytorch\") so they are uploaded too.")
    return parser


def main(argv: Optional[Sequence[str]] = None, *, retry: Retry = Retry()) -> int:
    """Run the command through cli.run_cli (a bad input is one line on stderr and exit code 2); a failed upload is
    one line and exit code 1. TensorFlow is imported only for --hub_export pytorch."""
    args = build_parser().parse_args(argv)
    return run_cli(lambda: push(args, retry), argv, tensorflow=args.hub_export == "pytorch")


def push(args: argparse.Namespace, retry: Retry) -> int:
    """Check the folder and the Hub access, add the PyTorch weights and the model card when asked or missing, then
    upload; returns the exit code (UserErrors are raised)."""
    token = resolve_token(args.hub_token)
    repo_id = prepare(args.output_dir, args.hub_model_id, token, args.hub_private_repo)
    if args.hub_export == "pytorch":
        from tf_finetune.outputs.export import add_pytorch_weights

        logger.info("Wrote the PyTorch weights to %s.", add_pytorch_weights(args.output_dir))
    if not os.path.exists(os.path.join(args.output_dir, MODEL_CARD_FILE)):  # after the export: the card tells of it
        from tf_finetune.outputs.model_card import write_model_card_for_run

        card = write_model_card_for_run(args.output_dir, repo_id)
        if card:
            logger.info("Wrote the model card %s.", card)
    try:
        commit = upload_output_dir(args.output_dir, repo_id, token, "Upload model with tf_finetune.push", retry=retry)
    except Exception as error:  # noqa: BLE001 - reported as one line
        print(f"error: uploading {args.output_dir} to {repo_id} failed: {error_summary(error, token)}", file=sys.stderr)
        return 1
    print(f"Uploaded {args.output_dir} to {repo_id} (commit {commit[:8]}).")
    return 0


def prepare(output_dir: str, repo_id: Optional[str], token: Optional[str], private: bool) -> str:
    """Check the folder and the Hub access; return the repository id."""
    if not os.path.isfile(os.path.join(output_dir, MODEL_CONFIG_FILE)):
        raise UserError(f"{output_dir} has no {MODEL_CONFIG_FILE}: pass the output directory of a finished run.")
    return check_push_access(repo_id, output_dir, token, private)


if __name__ == "__main__":
    sys.exit(main())
