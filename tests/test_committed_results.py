"""Every committed report under ``results/`` regenerates exactly from its committed records.

A report page names the command that wrote it (``Regenerate: `python -m bench.report RUNS --out OUT```);
the test reruns that command into a temporary folder and compares every table (Markdown, CSV, LaTeX)
byte for byte. Figures are not compared (PNG/PDF bytes depend on the renderer's version), so they are not drawn
(``--no-figures``); tests/test_report.py draws them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.report import REGENERATE_PREFIX, regenerate_line
from bench.report.__main__ import main as report_main

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted(ROOT.glob("results/*/report/report.md"))


def _command(page: Path) -> tuple[str, str]:
    """(runs_dir, out_dir) from the page's regenerate line, relative to the repository root."""
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith(REGENERATE_PREFIX):
            runs, out = line[len(REGENERATE_PREFIX) :].rstrip("`").split(" --out ")
            return runs, out
    raise AssertionError(f"{page}: no '{REGENERATE_PREFIX}...' line; regenerate it with bench.report")


def test_there_are_committed_reports() -> None:
    assert any(p.parent.parent.name == "demo" for p in PAGES)


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES, ids=[p.parent.parent.name for p in PAGES])
def test_committed_report_regenerates_exactly(page: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    runs, out = _command(page)
    assert (ROOT / out).resolve() == page.parent.resolve(), "the page's command must write this folder"
    monkeypatch.chdir(ROOT)  # the committed command uses repository-relative paths
    fresh = tmp_path / "report"
    assert report_main([runs, "--out", str(fresh), "--no-figures"]) == 0
    committed_tables = sorted(p.relative_to(page.parent) for p in page.parent.glob("*.*") if p.suffix != ".md")
    committed_tables += sorted(p.relative_to(page.parent) for p in page.parent.glob("*.md"))
    fresh_files = {p.relative_to(fresh) for p in fresh.glob("*.*")}
    assert not any((fresh / "figures").iterdir()), "--no-figures drew a figure"
    assert set(committed_tables) == fresh_files
    for name in committed_tables:
        mine, theirs = (page.parent / name).read_text(encoding="utf-8"), (fresh / name).read_text(encoding="utf-8")
        if name.name == "report.md":  # its own regenerate line names the temporary folder
            theirs = theirs.replace(regenerate_line(runs, fresh), regenerate_line(runs, out))
        assert mine == theirs, f"{page.parent / name} differs from a fresh `python -m bench.report {runs} --out {out}`"
