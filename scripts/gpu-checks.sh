#!/usr/bin/env bash
# The GPU measurements of the README's benchmark table, in one call of a lent GPU machine.
#
#   bash scripts/gpu-checks.sh prepare    # here: wheels of what the GPU image lacks -> .whl/
#   bash scripts/gpu-checks.sh run        # there, with .whl carried: figures and logs -> $OUT
#   GPU_CHECKS_SMOKE=1 bash scripts/gpu-checks.sh run   # anywhere: the same steps, tiny, on CPU
#
# run, in order (each step's log and JSON go to $OUT, or gpu-results/ when OUT is unset):
#   1. recording: full-resolution EfficientNet-B5 (1520 x 912) record() vs bare forwards, fp32,
#      then bf16 (bench_recording.py);
#   2. the whole G + M + 4 C study on 1,000 images (bench_study.py: Mammo-CLIP B5 layout);
#   3. torchrun with the nccl backend, one process per GPU, against one process
#      (bench_distributed.py; outputs must be byte-identical); needs 2 or more GPUs.
# About 8 minutes on one H100 with its start; set STUDY_IMAGES to change step 2's size.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"

prepare() {
  # pure-Python wheels (and wcwidth's abi3 one) for the GPU image's Python 3.12
  rm -rf .whl && mkdir -p .whl
  grep -qx "/.whl/" .git/info/exclude 2>/dev/null || echo "/.whl/" >> .git/info/exclude
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4
  python3 -m pip wheel --no-deps -w .whl efficientnet_pytorch==0.7.1
  du -sh .whl
}

run() {
  local out="${OUT:-$ROOT/gpu-results}" device=cuda study="${STUDY_IMAGES:-1000}"
  local rec=(--target timm:tf_efficientnet_b5 --size 1520x912 --input-size 1520x912 --images 64)
  local stu=(--size 1520x912 --stored-size 3040x1824 --batch-size 16)
  local dis=(--target timm:tf_efficientnet_b5 --layers 'blocks.*.*' --size 1520x912
             --dissector 'openclip:RN50?random_init=1' --images 64 --batch-size 16)
  mkdir -p "$out"
  export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
  if [[ -n "${GPU_CHECKS_SMOKE:-}" ]]; then
    device=cpu study=4
    rec=(--target timm:efficientnet_b0 --size 256x160 --input-size 256x160 --images 8
         --batch-size 4)
    stu=(--size 256x160 --backbone efficientnet-b0 --batch-size 4)
    dis=(--images 16 --batch-size 4)
  else
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$ROOT/src"
    nvidia-smi -L | tee "$out/gpu.txt"
  fi
  python3 -c "import torch, mammodissect; print('torch', torch.__version__, 'mammodissect', \
mammodissect.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$out/gpu.txt"
  for precision in fp32 bf16; do
    python3 benchmarks/bench_recording.py --device "$device" "${rec[@]}" \
      --precision "$precision" 2>&1 | tee "$out/recording_$precision.log"
  done
  python3 benchmarks/bench_study.py --device "$device" --images "$study" "${stu[@]}" \
    --json "$out/study.json" 2>&1 | tee "$out/study.log"
  local gpus=0
  [[ "$device" == cuda ]] && gpus=$(nvidia-smi -L | wc -l)
  if [[ "$device" == cpu || "$gpus" -ge 2 ]]; then
    local procs=$(( gpus >= 2 ? gpus : 2 ))
    python3 benchmarks/bench_distributed.py --device "$device" --procs "$procs" "${dis[@]}" \
      2>&1 | tee "$out/distributed.log"
  else
    echo "nccl torchrun skipped: $gpus GPU here; it needs one GPU per rank" \
      | tee "$out/distributed.log"
  fi
}

case "${1:-}" in
  prepare) prepare ;;
  run) run ;;
  *) echo "usage: bash scripts/gpu-checks.sh prepare|run" >&2; exit 2 ;;
esac
