#!/usr/bin/env bash
# Installs the pinned pip CUDA 13.0 compiler set (SPEC §4) into a local venv and prints the nvcc path.
# Usage: scripts/install-nvcc.sh [VENV_DIR]   (default: .venv-nvcc in the repo root)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${1:-"$root/.venv-nvcc"}
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" >&2
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check \
  nvidia-cuda-nvcc==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-crt==13.0.88 \
  nvidia-cuda-cccl==13.0.85 nvidia-nvvm==13.0.88 >&2
nvcc=$(ls "$venv"/lib/python3.*/site-packages/nvidia/cu13/bin/nvcc | head -n 1)
"$nvcc" --version >&2
echo "$nvcc"
