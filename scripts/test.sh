#!/usr/bin/env bash
# Install (into .venv, created if missing) and run the linter, the type checker and the whole
# test suite, offline (pyproject.toml: [tool.mypy] for the package's types; the tests and every
# docstring example of the package).
. "$(dirname "${BASH_SOURCE[0]}")/env.sh" "test,demo"
ruff check src tests benchmarks
mypy
python -m pytest "$@"
