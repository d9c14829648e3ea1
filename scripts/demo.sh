#!/usr/bin/env bash
# Install (into .venv, created if missing) and run the main job: `mammodissect demo`, the
# general-vs-mammography comparison on the phantom world (seeded phantoms, EfficientNet-Lite0
# with real ImageNet weights vs phantom-clip's image encoder, dissected by phantom-clip with the
# bundled birads+controls concepts). Extra arguments go to `mammodissect demo`.
. "$(dirname "${BASH_SOURCE[0]}")/env.sh" "demo"
mammodissect demo "$@"
