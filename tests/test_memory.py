"""Long notebook processes do not grow: run after run, and trial after trial, stay within a bound."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BOUND_MB = 50  # measured: +2 MB over 20 runs, +1 MB over a 10-trial search (benchmarks/memory_growth.py)


@pytest.mark.slow
def test_runs_and_search_trials_in_one_process_stay_within_the_bound():
    result = subprocess.run([sys.executable, "benchmarks/memory_growth.py", "--runs", "8", "--trials", "4"],
                            cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    rss = [float(value) for value in re.findall(r"^run \d+: RSS (\d+) MB", result.stdout, re.MULTILINE)]
    search = re.search(r"search: (\d+) -> (\d+) MB", result.stdout)
    assert len(rss) == 8 and search, result.stdout
    assert rss[-1] - rss[1] < BOUND_MB, rss  # after the first run, whose imports and traces stay
    assert float(search.group(2)) - float(search.group(1)) < BOUND_MB, result.stdout
