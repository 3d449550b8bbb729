"""`python -m tf_finetune.report RUN_DIR [RUN_DIR ...]`: a run's curves and report, or several runs side by side.

A run folder gives training_curves.png, report.md and report.html (self-contained: the curves are embedded), read
from what the run wrote: run_config.json, all_results.json, history.json, log_history.json (per logging step, when
logged), run_info.json (devices, strategy, versions, times) and the task's files (e.g. eval_confusion_matrix.json).
Training writes them at the end of every run; this command rebuilds them. Several run folders, or one folder of a
search (`--tune`, holding tuning_results.json), give comparison.md, comparison.html and comparison_curves.png: the
settings that differ, the final results, and the curves of every run overlaid.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from tf_finetune.outputs.report import build


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse the arguments, write the report or comparison, print the files written."""
    from tf_finetune.cli import run_cli

    def run() -> int:
        parser = argparse.ArgumentParser(prog="python -m tf_finetune.report", description=__doc__,
                                         formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.add_argument("folders", nargs="+", metavar="RUN_DIR",
                            help="Run folders (--output_dir of training runs), or one search folder.")
        parser.add_argument("--output_dir", help="Where to write (default: the run folder; for a comparison, the "
                                                 "search folder or the runs' common parent folder).")
        args = parser.parse_args(argv)
        for path in build(args.folders, args.output_dir):
            print(path)
        return 0

    return run_cli(run, argv, tensorflow=False)


if __name__ == "__main__":
    sys.exit(main())
