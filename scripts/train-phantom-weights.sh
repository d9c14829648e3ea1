#!/usr/bin/env bash
# Retrain every bundled phantom model from scratch, as shipped (CPU; about 45 minutes on 2 cores):
# phantom-clip (the dissector, also the M target), then the four C variants fine-tuned from it.
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
