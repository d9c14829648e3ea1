#!/usr/bin/env bash
# Retrain every bundled phantom model from scratch, as shipped: phantom-clip (the dissector, also
# the M target; 16 epochs x 2,000 new phantoms, text negatives and lexicon synonyms), then the
# four C variants fine-tuned from it. A GPU is used when there is one; on 2 CPU cores the
# dissector alone takes hours. Resumable: rerun this script after an interruption and every
# model continues after its last finished epoch (OUT.ckpt, the fine-tuning runs' last.pt).
# Writes into src/mammodissect/models/data/ (the package data); work folders go to ${1:-runs/weights}.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/env.sh" "test"
WORK="${1:-runs/weights}"
DATA="src/mammodissect/models/data"
mkdir -p "$WORK"
mammodissect phantom train-dissector --out "$WORK/phantom_clip.safetensors"
cp "$WORK/phantom_clip.safetensors" "$WORK/phantom_clip.json" "$DATA/"
for task in density mass calcification birads; do
  mammodissect phantom train-target --task "$task" --out "$WORK/phantom_c_${task}.safetensors"
  cp "$WORK/phantom_c_${task}.safetensors" "$WORK/phantom_c_${task}.json" "$DATA/"
done
