"""`python -m tf_finetune.train`: fine-tune a TF Auto model on a task and save it with its results."""
from __future__ import annotations

import sys
from typing import Optional, Sequence

from tf_finetune.cli import parse_config, run_cli


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse the flags, train, and return the exit code."""
    def run() -> int:
        config = parse_config(argv, prog="python -m tf_finetune.train", description=__doc__)
        if config is None:
            return 0
        if config.tune:
            from tf_finetune.tuning import tune

            tune(config)
            return 0
        from tf_finetune.training import train

        train(config)
        return 0

    return run_cli(run, argv)


if __name__ == "__main__":
    sys.exit(main())
