#!/usr/bin/env bash
# First-run check of a GPU machine: trains configs/large.yaml and configs/small.yaml at 256 px
# (K = 5, demo data) under torchrun in bf16, fp16 + GradScaler and compiled, resumes once,
# samples (ddim 50, dpmpp_2m 20, --batch_size auto), paints, runs `bench`, and prints one
# table of what works and how fast (also DIR/gpu_check.json). One GPU, within 10 minutes.
#   bash scripts/gpu_check.sh [--out DIR] [--overwrite]   # default DIR: runs/gpu_check
#   bash scripts/gpu_check.sh --smoke --out DIR           # the same checks at 16 px, any device (CI)
# Installs nothing (bash scripts/install.sh does). All options: bash scripts/gpu_check.sh --help
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
if [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"; else PY="${PYTHON:-python3}"; fi
exec "$PY" "$ROOT/scripts/gpu_check.py" "$@"
