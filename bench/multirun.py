"""A multirun's outcome: each job leaves one line in its Hydra job folder; the sweep sums them up.

Jobs may run in other processes or on other machines (joblib, submitit, Ray), so the count cannot
live in memory: each job writes ``outcome.json`` into its own Hydra output folder, and
:class:`MultirunSummary` (a Hydra callback, configured in ``conf/config.yaml``) reads them all when the
sweep ends, prints one line and exits non-zero when any run failed or diverged. A job folder without
an outcome (a job that was killed) counts as failed.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

OUTCOME_FILE = "outcome.json"
COUNTED = ("ok", "skipped", "failed", "diverged", "interrupted")
BAD = ("failed", "diverged", "interrupted")


def write_outcome(job_dir: Path, status: str, record_path: Path, reason: str | None = None) -> None:
    """Leave this job's status in its Hydra job folder for the sweep's summary."""
    job_dir.mkdir(parents=True, exist_ok=True)
    line = {"status": status, "record": str(record_path), "reason": reason}
    (job_dir / OUTCOME_FILE).write_text(json.dumps(line) + "\n")


def collect(sweep_dir: Path) -> Counter:
    """Status counts over the job folders of one sweep (``<sweep_dir>/<job num>/``)."""
    counts: Counter = Counter()
    for job_dir in sorted(p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()):
        outcome = job_dir / OUTCOME_FILE
        try:
            status = json.loads(outcome.read_text())["status"]
        except (OSError, ValueError, KeyError, TypeError):
            status = "failed"  # the job died before it could say how it ended
        counts[status] += 1
    return counts


def summary_line(counts: Counter) -> str:
    """``multirun: 4 ok, 0 skipped, 1 failed, 0 diverged``."""
    return "multirun: " + ", ".join(f"{counts.get(status, 0)} {status}" for status in COUNTED)


class MultirunSummary(Callback):
    """Hydra callback: one summary line at the end of a multirun; exit status 1 if any run went wrong."""

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        counts = collect(sweep_dir) if sweep_dir.is_dir() else Counter()
        bad = sum(counts.get(status, 0) for status in BAD)
        print(summary_line(counts), file=sys.stderr if bad else sys.stdout, flush=True)
        if bad:
            sys.exit(1)  # SystemExit passes through Hydra's error reporting: the sweep's exit status
