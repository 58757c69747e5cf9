#!/usr/bin/env bash
# Install defect-gen with its test extras into .venv and run the test suite (CPU, minutes).
# Extra arguments go to pytest, e.g. bash scripts/test.sh -k unet
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh test
exec .venv/bin/python -m pytest -q "$@"
