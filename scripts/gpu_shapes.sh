#!/usr/bin/env bash
# Cost at real sizes without weights (issue 23): bench.speed on one CUDA GPU in bf16 for models built in a real
# model's shape with random weights (initialised on the GPU, shared by the contenders), offline, <= 85 s
# (82 s of time limits + one torch import):
#   1. RoBERTa-large shape, classification step: every method + PEFT, batch 16 x 128 (timeout 32 s)
#                                                            -> OUT/roberta-large-shape/speed.json
#   2. Llama-3.2-1B shape, LM-loss step: prompt/prefix tuning, P-Tuning v2, LoRA, head-only, full fine-tuning
#      + PEFT, batch 4 x 256 (timeout 50 s)                -> OUT/llama3.2-1b-shape/speed.json
#   (3. only with SHAPES_8B=1: Llama-3-8B shape, LM step without full fine-tuning (32 GB of fp32 weights +
#      32 of gradients + 64 of AdamW would not leave room for activations on a 139 GB H200), batch 2 x 256
#      (timeout 60 s) -> OUT/llama3-8b-shape/speed.json.  Not in the default run: it does not fit 90 s.)
# Each step prints per contender the median step (IQR), tokens/s and peak memory (the CUDA allocator's), and
# the ratios to full fine-tuning and to PEFT. The log is OUT/gpu_shapes.log.
# Usage: scripts/gpu_shapes.sh OUT [--dry-run]
#   --dry-run  prints the commands; needs no GPU and runs nothing.
# Environment: PY (default .venv/bin/python; python3 on the device machine), SHAPES_DEVICE (cuda),
#   SHAPES_DTYPE (bf16), CLS_MODEL (roberta_large_shape), LM_MODEL (llama3_2_1b_shape), SHAPES_8B (unset),
#   SHAPES_ARGS (extra bench.speed options, appended last so they win: e.g. a tiny CPU check
#   SHAPES_DEVICE=cpu SHAPES_DTYPE=fp32 CLS_MODEL=tiny_roberta LM_MODEL=tiny_llama SHAPES_ARGS="--batch 2 ...").
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: scripts/gpu_shapes.sh OUT [--dry-run]}
DRY=0
[[ "${2:-}" == "--dry-run" ]] && DRY=1
PY=${PY:-.venv/bin/python}
DEVICE=${SHAPES_DEVICE:-cuda}
DTYPE=${SHAPES_DTYPE:-bf16}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1

read -r -a EXTRA <<< "${SHAPES_ARGS:-}"
COMMON=(--device "$DEVICE" --dtype "$DTYPE" --warmup 2 --steps 5 --repeats 2 --out "$OUT")
LM_METHODS=prompt_tuning,prefix_tuning,p_tuning_v2,lora,head_only
ROBERTA=("$PY" -m bench.speed "${COMMON[@]}" --name roberta-large-shape --sections cls
  --cls-model "${CLS_MODEL:-roberta_large_shape}" --lm-model none --batch 16 --length 128 "${EXTRA[@]}")
LLAMA=("$PY" -m bench.speed "${COMMON[@]}" --name llama3.2-1b-shape --sections lm --cls-model none
  --lm-model "${LM_MODEL:-llama3_2_1b_shape}" --lm-methods "$LM_METHODS,full_finetune" --lm-batch 4 --lm-length 256
  "${EXTRA[@]}")
LLAMA8B=("$PY" -m bench.speed "${COMMON[@]}" --name llama3-8b-shape --sections lm --cls-model none
  --lm-model llama3_8b_shape --lm-methods "$LM_METHODS" --lm-batch 2 --lm-length 256 "${EXTRA[@]}")
# run_step LIMIT NAME COMMAND...: one section under its own time limit; --dry-run prints it instead
run_step() {
  local limit=$1 name=$2 start=$SECONDS
  shift 2
  if [[ $DRY == 1 ]]; then
    echo "timeout $limit $*"
    return 0
  fi
  timeout "$limit" "$@" || { echo "gpu-shapes: $name exited $? (limit $limit s)"; return 1; }
  echo "gpu-shapes: $name took $((SECONDS - start)) s"
}

run_all() {
  local status=0
  run_step 32 roberta-large-shape "${ROBERTA[@]}" || status=1
  run_step 50 llama3.2-1b-shape "${LLAMA[@]}" || status=1
  if [[ -n "${SHAPES_8B:-}" ]]; then
    run_step 60 llama3-8b-shape "${LLAMA8B[@]}" || status=1
  fi
  return $status
}

if [[ $DRY == 1 ]]; then
  run_all
  exit 0
fi

# one interpreter start (torch's import takes seconds of the budget): the device line, or a refusal
PROBE='import sys, torch
gpu = torch.cuda.is_available()
print("torch", torch.__version__, "|", torch.cuda.get_device_name(0) if gpu else "no GPU")
sys.exit(0 if gpu or sys.argv[1] != "cuda" else 2)'
if ! INFO=$("$PY" -c "$PROBE" "$DEVICE" 2>&1); then
  echo "gpu-shapes: refused: no CUDA GPU visible to $PY (torch.cuda.is_available() is False); nothing was run" >&2
  exit 2
fi

mkdir -p "$OUT"
{
  echo "gpu-shapes $(date -u +%FT%TZ) $(git rev-parse --short HEAD 2>/dev/null || echo no-git)" "device=$DEVICE dtype=$DTYPE"
  echo "$INFO"
  run_all
  status=$?
  echo "gpu-shapes: done (status $status); outputs under $OUT/"
  exit $status
} 2>&1 | tee "$OUT/gpu_shapes.log"
exit "${PIPESTATUS[0]}"
