#!/usr/bin/env bash
# Everything qkv checks on a GPU, in one command under 8 minutes, for short access to one:
#
#     QKV_DATA_DIR=../shared/data bash bench/gpu_check.sh [NANOGPT_DIR] > gpu_check.log 2>&1
#
# 1. the machine: nvidia-smi, torch, the GPU's name;
# 2. nanoGPT's GPU shakespeare-char recipe (its own code, config/train_shakespeare_char.py: 5,000 iterations,
#    compiled, bf16) and qkv's `shakespeare-char` preset (the same model and schedule) back to back: the last
#    validation loss each prints and each one's wall time (nanoGPT publishes val 1.4697 in about 3 minutes on
#    an A100);
# 3. one GPT-2 small training step setup (bf16 autocast, fused AdamW, torch.compile): tokens/s and MFU
#    (bench/gpu_step.py);
# 4. the test suite's CUDA-marked tests (pytest -m cuda).
#
# Each part runs under its own time limit (PART_LIMIT seconds, default 165 for each of the two trainings; 70 s for the step, 60 s for the tests), so one
# slow part cannot eat the others' time; a part cut short says so and prints what it had. Nothing is downloaded:
# tinyshakespeare comes from $QKV_DATA_DIR (or the cache), nanoGPT from NANOGPT_DIR (default ../shared/peers/nanoGPT).
set -u
cd "$(dirname "$0")/.."
PY=${PY:-python}
[ -x .venv/bin/python ] && PY=.venv/bin/python
NANOGPT=${1:-../shared/peers/nanoGPT}
LIMIT=${PART_LIMIT:-165}
DATA=${QKV_DATA_DIR:-$HOME/.cache/qkv/data}/tinyshakespeare/input.txt
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT
t_all=$(date +%s)

echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "nvidia-smi: not found"
$PY -c "import torch; print('torch', torch.__version__, '| cuda', torch.version.cuda, '|',
        torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'NO CUDA DEVICE')"
$PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || { echo "no GPU: nothing to check"; exit 1; }
[ -f "$DATA" ] || { echo "no tinyshakespeare at $DATA: set QKV_DATA_DIR"; exit 1; }

echo "== nanoGPT: config/train_shakespeare_char.py on the GPU (its own code, unmodified)"
if [ -f "$NANOGPT/train.py" ]; then
  cp -r "$NANOGPT" "$SCRATCH/nanogpt"
  cp "$DATA" "$SCRATCH/nanogpt/data/shakespeare_char/input.txt"
  (cd "$SCRATCH/nanogpt" && $PY data/shakespeare_char/prepare.py > /dev/null)
  t=$(date +%s)
  (cd "$SCRATCH/nanogpt" && timeout "$LIMIT" $PY train.py config/train_shakespeare_char.py \
      > "$SCRATCH/nanogpt.log" 2>&1)
  rc=$?
  grep -E "^step [0-9]+:" "$SCRATCH/nanogpt.log" | tail -3
  echo "nanoGPT: exit $rc ($([ $rc = 124 ] && echo "cut at ${LIMIT} s" || echo done)), wall $(( $(date +%s) - t )) s"
else
  echo "nanoGPT not found at $NANOGPT: skipped"
fi

echo "== qkv: --preset shakespeare-char (the same recipe) on the GPU"
t=$(date +%s)
timeout "$LIMIT" $PY -m qkv train --preset shakespeare-char --data "$DATA" --out "$SCRATCH/qkv-run" \
  --train.compile true --train.progress false --no-sample > "$SCRATCH/qkv.log" 2>&1
rc=$?
grep -E "^step [0-9]+:|^val loss|^trained" "$SCRATCH/qkv.log" | tail -4
echo "qkv: exit $rc ($([ $rc = 124 ] && echo "cut at ${LIMIT} s" || echo done)), wall $(( $(date +%s) - t )) s"

echo "== GPT-2 small: bf16 autocast, fused AdamW, torch.compile"
timeout 70 $PY bench/gpu_step.py --steps 20 || echo "gpu_step: exit $?"

echo "== the CUDA-marked tests"
timeout 60 $PY -m pytest tests -m cuda -q -p no:cacheprovider 2>&1 | tail -5

echo "== gpu_check: $(( $(date +%s) - t_all )) s in all"
