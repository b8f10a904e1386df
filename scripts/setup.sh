#!/usr/bin/env bash
# Set up asymret on a fresh machine: the Fashion-MNIST Debian package, a virtualenv in .venv, PyTorch from this
# machine's disk, and the package with its pinned dependencies. Safe to run again (it skips what is there).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ]; then
  echo "[setup] installing the Fashion-MNIST Debian package"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import torch, torchvision; assert torch.__version__.startswith('2.14.1')" 2>/dev/null; then
  echo "[setup] installing torch 2.14.1 + torchvision 0.29.1 (from the local disk where available)"
  .venv/bin/pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1
fi
echo "[setup] installing asymret and its pinned dependencies"
.venv/bin/pip install -q --disable-pip-version-check -e ".[dev]"
echo "[setup] done: $(.venv/bin/asymret --help >/dev/null && echo 'asymret CLI ready')"
