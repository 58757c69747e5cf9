#!/usr/bin/env bash
# The main job on the built-in demo data, from nothing to image + mask pairs:
#   install -> demo data -> train_large.sh -> train_small.sh -> inference.sh
# About 6-8 minutes on a 2-core CPU. Everything goes to runs/demo/ (RUN_DIR to change it).
# Re-running reuses the data and the finished models and writes a fresh set of samples.
set -euo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
RUN_DIR="${RUN_DIR:-runs/demo}"

bash scripts/install.sh
PY=.venv/bin/python

if [ ! -d "$RUN_DIR/data/images" ]; then
  "$PY" -m defect_gen make-demo-data "$RUN_DIR/data"
fi
COMMON=(--num_defect 3 --set "data.root=$RUN_DIR/data")
bash train_large.sh --config configs/demo_large.yaml --work_dir "$RUN_DIR/large" "${COMMON[@]}"
bash train_small.sh --config configs/demo_small.yaml --work_dir "$RUN_DIR/small" "${COMMON[@]}"
# The demo models were trained on t >= 100 (large) and t < 400 (small): switch in between.
bash inference.sh --large_recep "$RUN_DIR/large" --small_recep "$RUN_DIR/small" \
  --step_inference 200 --num_defect 3 --sample_dir "$RUN_DIR/samples" \
  --num_samples 16 --batch_size 16 --steps 100 --overwrite

echo
echo "done in $(( $(date +%s) - START )) s"
echo "pairs:   $RUN_DIR/samples/images, masks, masks_color, manifest.jsonl"
echo "preview: $RUN_DIR/samples/preview.png (image | colour mask | overlay)"
