#!/usr/bin/env bash
# Install (into .venv, created if missing) and run the linter and the whole test suite, offline
# (pyproject.toml: the tests and every docstring example of the package).
. "$(dirname "${BASH_SOURCE[0]}")/env.sh" "test,demo"
ruff check src tests benchmarks
python -m pytest "$@"
