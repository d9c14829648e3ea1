"""How much breast density do phantom-clip's frozen image features hold, against what the C
variants' fine-tuning makes of it?

For each phantom-clip weights file (``--weights``, default the bundled ones), at the input
size the weights were trained at:

- ``linear probe``: multinomial logistic regression (scikit-learn, standardised features, L2
  ``C`` of 0.01, 0.1 and 1) on the frozen encoder's pooled features of 1,000 phantoms of the C
  variants' training seed (50,000), scored on the 500 held-out phantoms (seed 60,000) that
  ``train-target`` measures its C-density on;
- with ``--finetune-frozen LR [LR ...]``: ``mammodissect finetune`` with the encoder frozen
  (``--freeze image_encoder``: only the head trains; 2,000 phantoms, 3 epochs, batch 32, the
  C variants' other settings), each learning rate, scored on the same held-out phantoms.

    python benchmarks/bench_density_probe.py
    python benchmarks/bench_density_probe.py --weights runs/r640/phantom_clip.safetensors
    python benchmarks/bench_density_probe.py --finetune-frozen 1e-3 1e-4 --work runs/frozen
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import torch

from mammodissect.finetune import finetune
from mammodissect.models import load_target
from mammodissect.models.phantom_clip import spec_input_size
from mammodissect.phantom import PhantomSettings, generate, write_phantoms
from mammodissect.phantom.targets import HELD_OUT_SEED, TARGET_SEED, evaluate_target


@torch.inference_mode()
def _features(model, phantoms) -> np.ndarray:
    images = torch.stack([model.preprocess(p.image) for p in phantoms])
    return torch.cat([model.module.image_encoder(b) for b in images.split(32)]).numpy()


def _linear_probe(spec: str, settings: PhantomSettings, workers: int) -> dict[str, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    model = load_target(spec)
    train = generate(1000, TARGET_SEED, settings, workers=workers)
    test = generate(500, HELD_OUT_SEED, settings, workers=workers)
    x, xt = _features(model, train), _features(model, test)
    y = np.array([p.labels["density"] for p in train])
    yt = np.array([p.labels["density"] for p in test])
    scale = StandardScaler().fit(x)
    out = {"chance": round(float(max(np.mean(yt == k) for k in set(yt))), 3)}
    for c in (0.01, 0.1, 1.0):
        fit = LogisticRegression(C=c, max_iter=3000).fit(scale.transform(x), y)
        out[f"C={c:g}"] = round(float(fit.score(scale.transform(xt), yt)), 3)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default="bundled", help="phantom-clip weights (bundled)")
    parser.add_argument("--finetune-frozen", nargs="*", type=float, default=[], metavar="LR")
    parser.add_argument("--work", help="folder for the fine-tuning runs (default: temporary)")
    parser.add_argument("--workers", type=int, default=2, help="processes drawing phantoms")
    opts = parser.parse_args()
    spec = "phantom-clip" if opts.weights == "bundled" else f"phantom-clip:{opts.weights}"
    settings = PhantomSettings(size=spec_input_size(spec))
    started = time.perf_counter()
    size = "x".join(map(str, settings.size))
    print(f"{spec} at {size}; linear probe, held-out accuracy by C:")
    print(_linear_probe(spec, settings, opts.workers))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(opts.work or tmp)
        manifest = work / "probe" / "manifest.csv"
        if opts.finetune_frozen and not manifest.is_file():
            phantoms = generate(2000, TARGET_SEED, settings, workers=opts.workers)
            write_phantoms(work / "probe", phantoms)
        for lr in opts.finetune_frozen:
            run = work / f"frozen-lr{lr:g}"
            metrics = finetune(
                spec, str(manifest), "density", run, epochs=3, batch_size=32, lr=lr, seed=0,
                freeze="image_encoder", progress=False,
            )  # fmt: skip
            held = evaluate_target(
                f"classifier:{run / metrics['checkpoint']}", "density", 500, HELD_OUT_SEED,
                settings, workers=opts.workers,
            )  # fmt: skip
            val = [h.get("val_accuracy") for h in metrics["history"]]
            print(f"finetune, encoder frozen, lr {lr:g}: validation by epoch {val}; "
                  f"held-out accuracy {held['accuracy']}")  # fmt: skip
    print(f"({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
