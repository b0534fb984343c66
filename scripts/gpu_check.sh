#!/usr/bin/env bash
# The prepared GPU check (issue 12): on one CUDA GPU, offline models only, no network, <= 9 minutes
# (it must fit one 10-minute command on a lent device machine).
#   1. python -m bench.speed --device cuda --dtype bf16        -> results/gpu/speed/cuda-bf16/speed.json
#   2. the cpu_ner preset's protocol stage 1 (every method, every LR of its grid: 12 runs) at seed 0 on the
#      GPU, on the FULL training set (14,041 sentences instead of the CPU subset of 1,000) for 2 epochs
#      (GPU_SCALE; an estimate of ~12 ms per step puts 12 x 1,756 steps near 4.5 min). Runs the time
#      limit cuts are simply absent; a rerun resumes them.
#                                                                -> results/gpu/runs/cpu_ner/**/result.json
#   3. python -m bench.report on those records                  -> results/gpu/report/
# Everything, including the log (results/gpu/gpu_check.log), lands under results/gpu/.
# Usage: scripts/gpu_check.sh [--dry-run]     (make gpu-check)
#   --dry-run  prints the commands and composes the preset; needs no GPU.
# Environment: PY (default .venv/bin/python; it must be a CUDA build of torch), SOFTPROMPT_DATA (default
#   ../shared/data: must hold ner/conll2003/{train,dev}.txt), GPU_OUT (default results/gpu),
#   GPU_SCALE (overrides for step 2, default "task.max_train_samples=null trainer.epochs=2"),
#   SPEED_ARGS (extra bench.speed options, e.g. "--lm-model none" where SmolLM2 is not installed).
# Each step has its own time limit (120 s + 330 s + 60 s = 8.5 min at most).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${GPU_OUT:-results/gpu}
DRY=0
[[ "${1:-}" == "--dry-run" ]] && DRY=1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1

if [[ $DRY == 0 ]] && ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu-check: refused: no CUDA GPU visible to $PY (torch.cuda.is_available() is False); nothing was run" >&2
  exit 2
fi

read -r -a SPEED_EXTRA <<< "${SPEED_ARGS:-}"
SPEED=("$PY" -m bench.speed --device cuda --dtype bf16 --out "$OUT/speed" --name cuda-bf16 "${SPEED_EXTRA[@]}")
read -r -a SCALE <<< "${GPU_SCALE:-task.max_train_samples=null trainer.epochs=2}"
PROTOCOL=("$PY" -m bench.protocol cpu_ner --seeds 0 device=cuda dtype=bf16 "${SCALE[@]}" "runs_root=$OUT/runs")
REPORT=("$PY" -m bench.report "$OUT/runs/cpu_ner" --out "$OUT/report")

if [[ $DRY == 1 ]]; then
  printf '%s\n' "timeout 120 ${SPEED[*]}" "timeout 330 ${PROTOCOL[*]}" "timeout 60 ${REPORT[*]}"
  "${PROTOCOL[@]}" --dry-run   # composes the preset with the GPU overrides
  exit 0
fi

mkdir -p "$OUT"
{
  echo "gpu-check $(date -u +%FT%TZ) $(git rev-parse --short HEAD 2>/dev/null || echo no-git)"
  "$PY" -c "import torch; print('device:', torch.cuda.get_device_name(0), '| torch', torch.__version__)"
  status=0
  timeout 120 "${SPEED[@]}" || { echo "gpu-check: bench.speed exited $?"; status=1; }
  timeout 330 "${PROTOCOL[@]}" || { echo "gpu-check: bench.protocol exited $?"; status=1; }
  timeout 60 "${REPORT[@]}" || { echo "gpu-check: bench.report exited $?"; status=1; }
  echo "gpu-check: done (status $status); outputs under $OUT/"
  exit $status
} 2>&1 | tee "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
