#!/usr/bin/env bash
# Curate a sweep's output into results/<NAME>/ for committing: the run records (result.json, and
# error.log of a failed run) and the protocol's protocol.json, without Hydra's folders or run locks;
# then the report, regenerated from those records (its page names the command that rewrites it).
# Usage: scripts/curate.sh RUNS_DIR NAME      e.g. scripts/curate.sh results/runs/cpu_ner cpu_ner
# A rerun replaces results/NAME/records and results/NAME/report (a sweep still running can be curated
# again when it finishes: records are only ever added by the sweep).
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=${1:?usage: scripts/curate.sh RUNS_DIR NAME}
NAME=${2:?usage: scripts/curate.sh RUNS_DIR NAME}
PY=${PY:-.venv/bin/python}
[[ -d "$SRC" ]] || { echo "curate: no folder $SRC" >&2; exit 2; }
DEST=results/$NAME
rm -rf "$DEST/records" "$DEST/report"
(cd "$SRC" && find . -path ./.hydra -prune -o -type f \( -name result.json -o -name protocol.json -o -name error.log \) -print) |
  while read -r file; do
    mkdir -p "$DEST/records/$(dirname "$file")"
    cp "$SRC/$file" "$DEST/records/$file"
  done
"$PY" -m bench.report "$DEST/records" --out "$DEST/report" > /dev/null
echo "curate: $(find "$DEST/records" -name result.json | wc -l) record(s) -> $DEST/records, report -> $DEST/report"
