"""Rendering a report needs no torch: the method registry and the task layer it reads load without it.

Runs in a fresh interpreter, since this test session has long imported torch itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECORDS = REPO / "results" / "demo" / "records"  # committed records of real runs
HEAVY = ("torch", "transformers", "peft", "datasets")

# the CLI's own entry point, run as `python -m bench.report` runs it; then what it imported
SCRIPT = f"""
import json, runpy, sys
sys.argv = ["bench.report", *sys.argv[1:]]
try:
    runpy.run_module("bench.report", run_name="__main__", alter_sys=True)
    code = 0
except SystemExit as exit:
    code = exit.code
import methods
loaded = [name for name in {HEAVY!r} if name in sys.modules]
print("LOADED " + json.dumps({{"code": code, "loaded": loaded, "methods": list(methods.METHODS)}}))
"""


def test_rendering_a_report_imports_no_torch(tmp_path):
    out = tmp_path / "report"
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(RECORDS), "--out", str(out), "--name", "demo", "--summary"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.rsplit("LOADED ", 1)[1])
    assert seen["code"] == 0, result.stderr
    assert (out / "report.md").stat().st_size > 0 and any((out / "figures").iterdir())
    assert seen["methods"][:2] == ["prompt_tuning", "prefix_tuning"]  # the registry loaded, in its order
    assert seen["loaded"] == [], f"rendering a report imported {seen['loaded']}"
