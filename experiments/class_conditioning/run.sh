#!/usr/bin/env bash
# Class conditioning against rejection sampling at CPU size (issue 16).
#
#   bash experiments/class_conditioning/run.sh                  # built-in demo data, every stage
#   DATASET=mt bash experiments/class_conditioning/run.sh       # magnetic tile (../shared/data/magnetic-tile)
#   DATASET=mt_crops bash experiments/class_conditioning/run.sh # magnetic-tile crops, one small-RF model
#   STAGE=sample bash experiments/class_conditioning/run.sh     # one stage: train | sample | table
#
# Finished work is kept: re-running resumes training and skips finished sample folders.
# 1. train   the large/small pair (configs/demo_*.yaml, or configs/magnetic_tile_*.yaml with
#            its 10 few-shot photos per class) at SIZE px, for each of KINDS: unconditional
#            as configured, and class-conditional (model.class_cond: true, train.class_dropout
#            0.15); STEPS_TRAIN steps each, same seed. The demo data is 48 generated pairs.
#            mt_crops: one small-RF model on the whole chain (configs/magnetic_tile_paint.yaml:
#            native-resolution SIZE px crops, 80 % centred on a defect, EMA 0.99 for the short run),
#            sampled alone (--step_inference 1000): whole photos shrunk to 32 px lose most defects.
# 2. sample  for every class, N pairs with `--classes CLASS` (--max-tries TRIES): the
#            unconditional pair by rejection, the conditional pair at each guidance weight,
#            and the conditional pair unconditioned (--guidance 0) by rejection.
#            A finished folder is kept; a stopped one resumes (--resume).
# 3. table   experiments/class_conditioning/table.py: share of first candidates holding the class, and
#            candidates per accepted pair, per class and setting.
# One thread everywhere (OMP_NUM_THREADS=1): the measurements share a 2-core machine.
set -euo pipefail
cd "$(dirname "$0")/../.."

PY="${PY:-.venv/bin/python}"
DATASET="${DATASET:-demo}"
ROLES="large small"
if [ "$DATASET" = mt_crops ]; then
  RUN_DIR="${RUN_DIR:-runs/classcond_mt_crops}"
  CONFIGS=magnetic_tile; DATA="${DATA:-../shared/data/magnetic-tile}"; NUM_DEFECT=4
  CLASSES="${CLASSES:-Blowhole Break Crack Uneven}"
  KINDS="${KINDS:-cond}"
  ROLES=paint
elif [ "$DATASET" = mt ]; then
  RUN_DIR="${RUN_DIR:-runs/classcond_mt}"
  CONFIGS=magnetic_tile; DATA="${DATA:-../shared/data/magnetic-tile}"; NUM_DEFECT=4
  CLASSES="${CLASSES:-Blowhole Break Crack Uneven}"
  KINDS="${KINDS:-cond}"   # the rejection baseline: the same weights unconditioned (guidance 0)
else
  RUN_DIR="${RUN_DIR:-runs/classcond}"
  CONFIGS=demo; DATA="$RUN_DIR/data"; NUM_DEFECT=3
  CLASSES="${CLASSES:-scratch stain hole}"
  KINDS="${KINDS:-uncond cond}"
fi
SIZE="${SIZE:-32}"
STEPS_TRAIN="${STEPS_TRAIN:-300}"
N="${N:-16}"                  # pairs per class and setting
TRIES="${TRIES:-10}"          # --max-tries
SAMPLE_STEPS="${SAMPLE_STEPS:-50}"
GUIDANCE="${GUIDANCE:-1 2 4}"
STAGE="${STAGE:-all}"
export OMP_NUM_THREADS=1

run() { PYTHONPATH="$PWD" "$PY" -m defect_gen "$@"; }

if [ "$STAGE" = all ] || [ "$STAGE" = train ]; then
  if [ "$CONFIGS" = demo ] && [ ! -d "$DATA/images" ]; then run make-demo-data "$DATA" --image_size "$SIZE"; fi
  for kind in $KINDS; do
    extra=()
    [ "$kind" = cond ] && extra=(--set model.class_cond=true --set train.class_dropout=0.15)
    [ "$ROLES" = paint ] && extra+=(--set train.ema_rate=0.99 --set train.warmup_steps=50 --set train.log_every=25)
    for role in $ROLES; do
      run train --config "configs/${CONFIGS}_$role.yaml" --work_dir "$RUN_DIR/$kind/$role" \
        --num_defect "$NUM_DEFECT" --set "data.root=$DATA" --set "model.image_size=$SIZE" --set "train.max_steps=$STEPS_TRAIN" \
        --set train.sample_every=0 --set train.save_every=100 --no-progress "${extra[@]}"
    done
  done
fi

sample() {  # sample KIND OUT [extra flags...]
  local kind=$1 out=$2; shift 2
  if [ -f "$out/.done" ]; then return; fi
  local resume=()
  [ -f "$out/manifest.jsonl" ] && resume=(--resume)
  local models=(--large_recep "$RUN_DIR/$kind/large" --small_recep "$RUN_DIR/$kind/small" --step_inference 200)
  [ "$ROLES" = paint ] && models=(--small_recep "$RUN_DIR/$kind/paint" --step_inference 1000)
  run sample "${models[@]}" \
    --num_defect "$NUM_DEFECT" --sample_dir "$out" --num_samples "$N" --batch_size "$N" --steps "$SAMPLE_STEPS" \
    --max-tries "$TRIES" --no-progress "${resume[@]}" "$@" || true   # a class with no accepted pair is a result
  touch "$out/.done"
}

if [ "$STAGE" = all ] || [ "$STAGE" = sample ]; then
  for cls in $CLASSES; do
    for w in $GUIDANCE; do
      sample cond "$RUN_DIR/samples/cond_w$w/$cls" --classes "$cls" --guidance "$w"
    done
    if [[ " $KINDS " == *" uncond "* ]]; then sample uncond "$RUN_DIR/samples/rejection/$cls" --classes "$cls"; fi
    # The conditional pair unconditioned (guidance 0): rejection with the very same weights.
    sample cond "$RUN_DIR/samples/rejection_cond/$cls" --classes "$cls" --guidance 0
  done
fi

if [ "$STAGE" = all ] || [ "$STAGE" = table ]; then
  # Quality columns only for whole-image models: the real pairs load as whole photos, which a
  # model of native-resolution crops (mt_crops) is not comparable with.
  quality=(--real_config "$RUN_DIR/cond/large/config.yaml")
  [ "$ROLES" = paint ] && quality=()
  PYTHONPATH="$PWD" "$PY" experiments/class_conditioning/table.py "$RUN_DIR/samples" --classes $CLASSES "${quality[@]}"
fi
