#!/usr/bin/env bash
# Create (or reuse) the virtual environment .venv and install defect-gen into it.
#
# torch is chosen before anything else so that pip never pulls several GB of CUDA packages
# onto a CPU-only machine: a torch that already imports (CUDA or CPU) is kept; otherwise
# the CPU build torch==$TORCH_VERSION is installed. Usage: bash scripts/install.sh [EXTRAS]
# e.g. bash scripts/install.sh test
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
VENV="${VENV:-.venv}"
EXTRAS="${1:-}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[install] creating virtual environment $VENV"
  # --system-site-packages: a CUDA torch already installed system-wide is seen and kept.
  python3 -m venv --system-site-packages "$VENV"
fi
PY="$VENV/bin/python"

if "$PY" -c "import torch" >/dev/null 2>&1; then
  echo "[install] keeping torch $("$PY" -c 'import torch; print(torch.__version__)')"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
  echo "[install] GPU found: installing torch (CUDA build)"
  "$PY" -m pip install --quiet "torch"
else
  echo "[install] no GPU and no torch: installing the CPU build torch==$TORCH_VERSION"
  "$PY" -m pip install --quiet "torch==$TORCH_VERSION"
fi

SPEC="."
[ -n "$EXTRAS" ] && SPEC=".[$EXTRAS]"
echo "[install] installing defect-gen ($SPEC)"
"$PY" -m pip install --quiet -e "$SPEC"
"$PY" -c "import defect_gen, torch; print(f'[install] ok: defect-gen {defect_gen.__version__}, torch {torch.__version__}')"
