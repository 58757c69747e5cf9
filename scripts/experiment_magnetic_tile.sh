#!/usr/bin/env bash
# The magnetic-tile evaluation experiment: few-shot split -> train large + small -> generate
# pairs for every sampling variant -> `defect-gen evaluate` (real alone vs real + synthetic).
#
#   bash scripts/experiment_magnetic_tile.sh            # everything, skipping finished stages
#   STAGE=evaluate bash scripts/experiment_magnetic_tile.sh   # only one stage (train|sample|evaluate)
#
# Sizes are variables so the same script runs at CPU size or closer to the paper's size on a
# GPU. docs/results.md ran IMAGE_SIZE=48 STEPS_TRAIN=300 SAMPLE_STEPS=25/50 SEG_STEPS=600
# (about 25 min on a shared 2-core CPU); the defaults below are somewhat larger. On a GPU, e.g.
#   STEPS_TRAIN=20000 IMAGE_SIZE=128 N_MAIN=400 N_ABLATION=200 SEG_STEPS=3000 bash scripts/...
# Few-shot split: data.num_images_per_class (10 per class, seed 0 in the configs) picks the
# training pairs; `evaluate` holds out the rest of the defect images (capped at MAX_HELDOUT).
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PY:-.venv/bin/python}"
DATA="${DATA:-../shared/data/magnetic-tile}"
RUN_DIR="${RUN_DIR:-runs/mt_eval}"
STAGE="${STAGE:-all}"
IMAGE_SIZE="${IMAGE_SIZE:-64}"
STEPS_TRAIN="${STEPS_TRAIN:-400}"        # diffusion training steps per model (batch 16)
SAMPLE_STEPS="${SAMPLE_STEPS:-100}"      # respaced sampling steps
MAIN_SWITCH="${MAIN_SWITCH:-200}"        # --step_inference of the main two-stage variant
N_MAIN="${N_MAIN:-80}"                   # pairs of the main variant (ratios up to N_MAIN / 40)
N_ABLATION="${N_ABLATION:-40}"           # pairs of each ablation variant
ABLATIONS="${ABLATIONS-small_only large_only switch400 switch600}"  # ABLATIONS="" for none
RATIOS="${RATIOS:-0.5,1,2}"
SEEDS="${SEEDS:-3}"
SEG_STEPS="${SEG_STEPS:-400}"
MAX_HELDOUT="${MAX_HELDOUT:-120}"
# --keep-empty: write pairs whose mask came out empty instead of drawing again. Briefly
# trained models leave most masks empty, and rejection then costs ~20x the sampling; the
# report shows the defect-free share of each folder. Set SAMPLE_FLAGS="" to reject them.
SAMPLE_FLAGS="${SAMPLE_FLAGS---keep-empty}"

if [ ! -d "$DATA" ]; then
  echo "no magnetic-tile data at $DATA (set DATA=...)" >&2
  exit 2
fi
COMMON=(--num_defect 4 --set "data.root=$DATA" --set "model.image_size=$IMAGE_SIZE"
        --set "train.max_steps=$STEPS_TRAIN" --set "train.save_every=$STEPS_TRAIN" --set "train.sample_every=0"
        --no-progress)

if [ "$STAGE" = all ] || [ "$STAGE" = train ]; then
  # Both models train on every timestep (t_min 0 / t_max 1000, not the configs' windows), so
  # that one pair of models serves every ablation: large only, small only, any switch step.
  "$PY" -m defect_gen train --config configs/magnetic_tile_large.yaml --work_dir "$RUN_DIR/large" \
    "${COMMON[@]}" --set diffusion.t_min=0
  "$PY" -m defect_gen train --config configs/magnetic_tile_small.yaml --work_dir "$RUN_DIR/small" \
    "${COMMON[@]}" --set diffusion.t_max=1000
fi

# name -> --step_inference (large for t >= S, small for t < S)
switch_of() {
  case "$1" in
    main) echo "$MAIN_SWITCH" ;;
    small_only) echo 1000 ;;
    large_only) echo 0 ;;
    switch*) echo "${1#switch}" ;;
    *) echo "unknown variant $1" >&2; exit 2 ;;
  esac
}

# sample_variant OUT N SWITCH [extra sample flags...]; skips a folder that is already complete
sample_variant() {
  local out=$1 n=$2 switch=$3
  shift 3
  if [ -f "$out/manifest.jsonl" ] && [ "$(wc -l < "$out/manifest.jsonl")" -ge "$n" ]; then
    echo "$out: done"; return
  fi
  "$PY" -m defect_gen sample --large_recep "$RUN_DIR/large" --small_recep "$RUN_DIR/small" \
    --step_inference "$switch" --num_defect 4 --sample_dir "$out" --num_samples "$n" \
    --batch_size 16 --steps "$SAMPLE_STEPS" --seed 1000 --overwrite --no-progress "$@"
}

if [ "$STAGE" = all ] || [ "$STAGE" = sample ]; then
  # Mask-conditioned variants (`sample --mask`): an image for each few-shot training mask,
  # placed at random, so every pair holds a defect (the models at CPU size rarely draw one).
  "$PY" -c "import sys; from defect_gen.evaluate.data import export_train_masks as e; \
print(e(sys.argv[1], sys.argv[2:], '$RUN_DIR/train_masks', $IMAGE_SIZE), 'training masks')" \
    configs/magnetic_tile_small.yaml "data.root=$DATA"
  for name in main $ABLATIONS; do
    n=$N_ABLATION; [ "$name" = main ] && n=$N_MAIN
    sample_variant "$RUN_DIR/samples/$name" "$n" "$(switch_of "$name")" $SAMPLE_FLAGS
    sample_variant "$RUN_DIR/samples/mask_$name" "$n" "$(switch_of "$name")" \
      --mask "$RUN_DIR/train_masks" --place random
  done
fi

if [ "$STAGE" = all ] || [ "$STAGE" = evaluate ]; then
  SYN=("$RUN_DIR/samples/main" "$RUN_DIR/samples/mask_main")
  for name in $ABLATIONS; do SYN+=("$RUN_DIR/samples/mask_$name"); done
  "$PY" -m defect_gen evaluate --real configs/magnetic_tile_small.yaml --set "data.root=$DATA" \
    --synthetic "${SYN[@]}" --out "$RUN_DIR/report" --ratios "$RATIOS" --seeds "$SEEDS" \
    --steps "$SEG_STEPS" --image_size "$IMAGE_SIZE" --max_heldout "$MAX_HELDOUT" --no-progress
fi
