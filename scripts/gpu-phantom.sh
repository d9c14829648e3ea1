#!/usr/bin/env bash
# The phantom world's models trained on a lent GPU machine, in one call.
#
#   bash scripts/gpu-phantom.sh prepare   # here: .minilm/ (the text tower the GPU image lacks)
#   bash scripts/gpu-phantom.sh run       # there, with .minilm carried: models -> $OUT
#   GPU_PHANTOM_SMOKE=1 bash scripts/gpu-phantom.sh run   # anywhere: the same steps, tiny, on CPU
#
# prepare writes a float16 all-MiniLM-L6-v2 holding only the word pieces of phantom-clip's
# training texts (scripts/minilm-subset.py: about 23 MB instead of the package's 87 MB, which
# does not fit the 64 MiB a call carries beside the working tree) and checks it against the
# full model. run, in order (logs and files to $OUT, or gpu-phantom/ when OUT is unset):
#   1. phantom-clip: `train-dissector --init bundled --input-size $SIZE --epochs $EPOCHS
#      --lr 1.5e-4` (the 640 x 384 candidate's recipe; EPOCHS=3 is the run measured on the
#      CPU), phantoms drawn by $WORKERS processes;
#   2. the four C variants fine-tuned from it (`train-target --base phantom-clip:W`, defaults).
# Five .safetensors come back, with every .json and log in one phantom-facts.tar.gz (a call
# returns at most 8 files). Copy them into src/mammodissect/models/data/ only after measuring
# them (README, "Input resolution, measured").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"
TEXT_TOWER=.minilm

prepare() {
  python3 scripts/minilm-subset.py "$TEXT_TOWER"
  local tree tower
  tree=$(git ls-files -co --exclude-standard -z | du -cb --files0-from=- | tail -1 | cut -f1)
  tower=$(du -sb "$TEXT_TOWER" | cut -f1)
  echo "a call carries $(( (tree + tower) / 1048576 )) MiB of its 64: the working tree" \
    "$(( tree / 1048576 )) MiB, $TEXT_TOWER $(( tower / 1048576 )) MiB"
  (( tree + tower < 64 * 1048576 ))
}

run() {
  local out="${OUT:-$ROOT/gpu-phantom}" size="${SIZE:-640x384}" epochs="${EPOCHS:-3}"
  local workers="${WORKERS:-14}" device=cuda
  local dis=() tgt=()
  work="$(mktemp -d)"  # global: the trap runs after run() returns
  trap 'rm -rf "$work"' EXIT
  mkdir -p "$out"
  export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
  export MAMMODISSECT_MINILM="$ROOT/$TEXT_TOWER" PYTHONPATH="$ROOT/src"
  if [[ -n "${GPU_PHANTOM_SMOKE:-}" ]]; then
    device=cpu size=128x80 epochs=1 workers=2
    dis=(--images 8 --batch-size 8 --held-out 8 --refit-images 8 --refit-steps 2)
    tgt=(--images 12 --epochs 1 --batch-size 12 --held-out 8)
  else
    nvidia-smi -L | tee "$out/gpu.txt"
  fi
  python3 -m mammodissect phantom train-dissector --init bundled --input-size "$size" \
    --epochs "$epochs" --lr 1.5e-4 --workers "$workers" --device "$device" --quiet "${dis[@]}" \
    --out "$work/phantom_clip.safetensors" 2>&1 | tee "$work/phantom_clip.log"
  for task in density mass calcification birads; do
    python3 -m mammodissect phantom train-target --task "$task" --workers "$workers" --quiet \
      --base "phantom-clip:$work/phantom_clip.safetensors" "${tgt[@]}" \
      --out "$work/phantom_c_$task.safetensors" 2>&1 | tee "$work/phantom_c_$task.log"
  done
  cp "$work"/*.safetensors "$out/"
  tar -czf "$out/phantom-facts.tar.gz" -C "$work" $(cd "$work" && ls ./*.json ./*.log)
  ls -l "$out"
}

case "${1:-}" in
  prepare) prepare ;;
  run) run ;;
  *) echo "usage: bash scripts/gpu-phantom.sh prepare|run" >&2; exit 2 ;;
esac
