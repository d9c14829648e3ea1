"""Recording throughput with 1 vs N processes (torchrun, gloo on CPU), measured side by side.

Both sides run ``python -m torch.distributed.run --standalone --nproc-per-node P -m
mammodissect run ...`` on the same phantom probe, each with a fresh cache (so every image
is decoded and every forward runs), the CPU threads split evenly between the processes
(``OMP_NUM_THREADS = cores // P``). Reported: images/s of the recording phase (rank 0's
``timings_s.record``, which includes waiting for the other ranks and the merge), the
end-to-end wall time, and the ratio N-process / 1-process. The outputs of both runs are
compared: byte-identical when every process uses the same number of threads (``--cores 1``);
with different thread counts CPU kernels sum in another order and the last float bits move.

    python benchmarks/bench_distributed.py                  # 64 phantoms, Lite0 at 320x192
    python benchmarks/bench_distributed.py --images 128 --procs 4 --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from mammodissect.phantom import generate, write_phantoms


def launch(procs: int, args: list[str], cache: Path, threads: int) -> float:
    env = {
        **os.environ,
        "MAMMODISSECT_CACHE_DIR": str(cache),
        "OMP_NUM_THREADS": str(threads),
    }
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", str(procs), "-m", "mammodissect", *args]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode:
        sys.exit(f"{procs}-process run failed:\n{done.stderr[-4000:]}")
    return wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=64, help="phantoms in the probe (64)")
    parser.add_argument("--procs", type=int, default=2, help="processes of the sharded run (2)")
    parser.add_argument("--target", default="efficientnet:efficientnet-lite0")
    parser.add_argument("--layers", default="blocks.*.*")
    parser.add_argument("--size", default="320x192", help="target input size (320x192)")
    parser.add_argument("--dissector", default="phantom-clip")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    opts = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_phantoms(root / "probe", generate(opts.images, seed=7))
        results = {}
        for procs in (1, opts.procs):
            out = root / f"run{procs}"
            args = [
                "run", "--target", opts.target, "--layers", opts.layers,
                "--image-size", opts.size, "--dissector", opts.dissector,
                "--probe", str(root / "probe" / "manifest.csv"),
                "--concepts", "birads+controls", "--out", str(out),
                "--batch-size", str(opts.batch_size), "--device", opts.device,
                "--num-workers", "0", "--quiet",
            ]  # fmt: skip
            threads = max(1, opts.cores // procs)
            wall = launch(procs, args, root / f"cache{procs}", threads)
            info = json.loads((out / "run.json").read_text())
            seconds = info["timings_s"]["record"]
            results[procs] = (opts.images / seconds, wall)
            print(
                f"{procs} process(es) x {threads} thread(s): recording {seconds:.1f} s = "
                f"{opts.images / seconds:.2f} images/s; end to end {wall:.1f} s"
            )
        same = all(
            (root / "run1" / name).read_bytes() == (root / f"run{opts.procs}" / name).read_bytes()
            for name in ("neurons.csv", "top_images.csv")
        )
    one, many = results[1], results[opts.procs]
    print(
        f"ratio {opts.procs}/1: recording images/s x{many[0] / one[0]:.2f}, "
        f"end-to-end wall x{one[1] / many[1]:.2f} faster; outputs identical: {same}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
