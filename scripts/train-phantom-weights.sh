#!/usr/bin/env bash
# Remake the bundled phantom models into the package data (src/mammodissect/models/data/);
# work folders go to ${2:-runs/weights}. Two modes:
#
#   bash scripts/train-phantom-weights.sh scratch   # what ships: phantom-clip from scratch
#       (`mammodissect phantom train-dissector` defaults: 16 epochs x 2,000 new phantoms,
#       2 frozen stages, text negatives and lexicon synonyms, then the heads refit on 8,000
#       phantoms; 58 minutes in all on 2 shared CPU cores, a GPU is used when there is one), then the
#       four C variants fine-tuned from it (`train-target`, a few minutes each).
#   bash scripts/train-phantom-weights.sh refit     # the previous release, for comparison:
#       the v1 tower of commit fc2a6d8 (from git history) with its heads refit by
#       `mammodissect phantom refit-dissector` (seeded; about 8 minutes). Written to WORK
#       only; the package data is left as it is.
#
# Resumable: rerun after an interruption and every model continues after its last finished
# epoch (OUT.ckpt, the fine-tuning runs' last.pt).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/env.sh" "test"
MODE="${1:-scratch}"
WORK="${2:-runs/weights}"
DATA="src/mammodissect/models/data"
V1_TOWER_COMMIT=fc2a6d8
mkdir -p "$WORK"
case "$MODE" in
  refit)
    mkdir -p "$WORK/v1" "$WORK/v1-refit"
    git show "$V1_TOWER_COMMIT:$DATA/phantom_clip.safetensors" > "$WORK/v1/phantom_clip.safetensors"
    git show "$V1_TOWER_COMMIT:$DATA/phantom_clip.json" > "$WORK/v1/phantom_clip.json"
    mammodissect phantom refit-dissector --weights "$WORK/v1/phantom_clip.safetensors" \
      --out "$WORK/v1-refit/phantom_clip.safetensors"
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
    echo "usage: $0 [scratch|refit] [WORK_DIR]" >&2
    exit 2
    ;;
esac
