#!/usr/bin/env bash
# Remake the bundled phantom models into the package data (src/mammodissect/models/data/);
# work folders go to ${2:-runs/weights}. Two modes:
#
#   bash scripts/train-phantom-weights.sh refit     # what ships now: the v1 tower of commit
#       fc2a6d8 (from git history) with its heads refit by `mammodissect phantom
#       refit-dissector` (seeded; about 8 minutes on 2 CPU cores). The tower is kept bit for bit,
#       so the four C variants fine-tuned from it stay as they are.
#   bash scripts/train-phantom-weights.sh scratch   # everything from scratch with the current
#       recipe: phantom-clip (16 epochs x 2,000 new phantoms, text negatives and lexicon
#       synonyms, then the heads refit), then the four C variants fine-tuned from it. A GPU is
#       used when there is one; on 2 CPU cores the dissector alone takes about an hour.
#
# Resumable: rerun after an interruption and every model continues after its last finished
# epoch (OUT.ckpt, the fine-tuning runs' last.pt).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/env.sh" "test"
MODE="${1:-refit}"
WORK="${2:-runs/weights}"
DATA="src/mammodissect/models/data"
V1_TOWER_COMMIT=fc2a6d8
mkdir -p "$WORK"
case "$MODE" in
  refit)
    mkdir -p "$WORK/v1"
    git show "$V1_TOWER_COMMIT:$DATA/phantom_clip.safetensors" > "$WORK/v1/phantom_clip.safetensors"
    git show "$V1_TOWER_COMMIT:$DATA/phantom_clip.json" > "$WORK/v1/phantom_clip.json"
    mammodissect phantom refit-dissector --weights "$WORK/v1/phantom_clip.safetensors" \
      --out "$WORK/phantom_clip.safetensors"
    cp "$WORK/phantom_clip.safetensors" "$WORK/phantom_clip.json" "$DATA/"
    ;;
  scratch)
    mammodissect phantom train-dissector --out "$WORK/phantom_clip.safetensors"
    cp "$WORK/phantom_clip.safetensors" "$WORK/phantom_clip.json" "$DATA/"
    for task in density mass calcification birads; do
      mammodissect phantom train-target --task "$task" --out "$WORK/phantom_c_${task}.safetensors"
      cp "$WORK/phantom_c_${task}.safetensors" "$WORK/phantom_c_${task}.json" "$DATA/"
    done
    ;;
  *)
    echo "usage: $0 [refit|scratch] [WORK_DIR]" >&2
    exit 2
    ;;
esac
