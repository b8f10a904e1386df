#!/usr/bin/env bash
# Set up asymret on a fresh machine: Debian packages (Fashion-MNIST, CJK fonts), a virtualenv in .venv, PyTorch from this
# machine's disk, and the package with its pinned dependencies. Safe to run again (it skips what is there).
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: Fashion-MNIST, the CJK fonts of the glyph benchmark (docs/GLYPHS.md names their licences), the
# 17 icon themes of the icon benchmark and librsvg's SVG renderer (docs/ICONS.md: licences; ~400 MB installed), and
# the headless Chromium + driver the web page's browser test drives (nothing downloads a browser)
DEBIAN_PACKAGES=(dataset-fashion-mnist fonts-noto-cjk fonts-arphic-ukai fonts-arphic-uming fonts-arphic-gbsn00lp
                 fonts-arphic-gkai00mp fonts-wqy-zenhei fonts-wqy-microhei chromium chromium-driver
                 librsvg2-bin tango-icon-theme gnome-icon-theme adwaita-icon-theme gnome-colors-common
                 oxygen-icon-theme breeze-icon-theme elementary-icon-theme elementary-xfce-icon-theme
                 faba-icon-theme numix-icon-theme numix-icon-theme-circle faenza-icon-theme gnome-icon-theme-nuovo
                 gnome-icon-theme-yasis suru-icon-theme gnome-icon-theme-gartoon gnome-icon-theme-suede)
MISSING=()
for package in "${DEBIAN_PACKAGES[@]}"; do
  dpkg -s "$package" >/dev/null 2>&1 || MISSING+=("$package")
done
if [ ${#MISSING[@]} -gt 0 ]; then
  echo "[setup] installing Debian packages: ${MISSING[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${MISSING[@]}" >/dev/null
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
.venv/bin/pip install -q --disable-pip-version-check -e ".[dev,deploy,serve,scale]"
echo "[setup] done: $(.venv/bin/asymret --help >/dev/null && echo 'asymret CLI ready')"
