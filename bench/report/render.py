"""Rendering display tables as Markdown, LaTeX and CSV (no optional pandas dependencies).

Display tables hold strings; ``**x**`` marks the best value of a column (bold in Markdown,
``\\textbf`` in LaTeX, a trailing ``*`` in CSV).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

_BOLD = re.compile(r"\*\*(.+?)\*\*")
# LaTeX specials first, then the few non-ASCII symbols the tables use.
_LATEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "≈": r"$\approx$",
    "≥": r"$\geq$",
    "≤": r"$\leq$",
    "→": r"$\to$",
    "Δ": r"$\Delta$",
    "×": r"$\times$",
    "<": r"$<$",
    ">": r"$>$",
}
LATEX_WRAP_CHARS = 40
"""LaTeX columns with a cell longer than this become fixed-width wrapping ``p{}`` columns."""
_LATEX_PATTERN = re.compile("|".join(re.escape(k) for k in _LATEX_ESCAPES))


def _cell(value: object) -> str:
    return "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub pipe table; the index is not written (tables carry their keys as columns)."""
    header = [str(c) for c in table.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in table.itertuples(index=False):
        lines.append("| " + " | ".join(_cell(v).replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines)


def latex_escape(text: str) -> str:
    """Escape LaTeX specials and turn ``**x**`` into ``\\textbf{x}``."""
    parts = _BOLD.split(text)
    out = []
    for i, part in enumerate(parts):
        escaped = _LATEX_PATTERN.sub(lambda m: _LATEX_ESCAPES[m.group(0)], part)
        out.append(r"\textbf{" + escaped + "}" if i % 2 else escaped)
    return "".join(out)


def to_latex(table: pd.DataFrame, caption: str = "") -> str:
    """A ``booktabs`` tabular in a table float (needs ``\\usepackage{booktabs}``)."""
    # Long free-text columns (comparison, failures) wrap instead of running off the page.
    widths = [max([len(str(c)), *(len(_cell(v)) for v in table[c])]) for c in table.columns]
    columns = "".join(r"p{3.2cm}" if w > LATEX_WRAP_CHARS else "l" for w in widths)
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        rf"\begin{{tabular}}{{{columns}}}",
        r"\toprule",
        " & ".join(latex_escape(str(c)) for c in table.columns) + r" \\",
        r"\midrule",
    ]
    for row in table.itertuples(index=False):
        lines.append(" & ".join(latex_escape(_cell(v)) for v in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        lines.append(rf"\caption{{{latex_escape(caption)}}}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def to_csv_frame(table: pd.DataFrame) -> pd.DataFrame:
    """The display table with bold markup replaced by a trailing ``*``."""
    return table.map(lambda v: _BOLD.sub(r"\1*", v) if isinstance(v, str) else v)


def append_section(report_page: Path | None, caption: str, table: pd.DataFrame) -> None:
    """Append ``## caption`` and the table to an existing report page, once (a rerun does not repeat it)."""
    if report_page is None or not report_page.exists():
        return
    page = report_page.read_text(encoding="utf-8")
    section = f"## {caption}\n\n{to_markdown(table)}\n"
    if section not in page:
        report_page.write_text(page.rstrip("\n") + "\n\n" + section, encoding="utf-8")


def write_table(
    table: pd.DataFrame, out_dir: Path, name: str, caption: str = "", data: pd.DataFrame | None = None
) -> dict[str, Path]:
    """Write ``name.csv``, ``name.md``, ``name.tex`` (and ``name_data.csv`` with the numbers)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out_dir / f"{name}.csv", "md": out_dir / f"{name}.md", "tex": out_dir / f"{name}.tex"}
    to_csv_frame(table).to_csv(paths["csv"], index=False)
    title = f"**{caption}**\n\n" if caption else ""
    paths["md"].write_text(title + to_markdown(table) + "\n", encoding="utf-8")
    paths["tex"].write_text(to_latex(table, caption), encoding="utf-8")
    if data is not None:
        paths["data"] = out_dir / f"{name}_data.csv"
        # 12 significant digits: a mean's last bits depend on the BLAS/SIMD path, and a committed report
        # must regenerate byte for byte on another machine
        data.to_csv(paths["data"], index=False, float_format="%.12g")
    return paths
