#!/usr/bin/env bash
# Class conditioning against rejection sampling on the built-in demo data, CPU size (issue 16).
#
#   bash scripts/class_cond_experiment.sh     # every stage; finished work is kept (re-run resumes)
#
# 1. train   the demo large/small pair twice on 32 px demo data (48 pairs): unconditional
#            (as configs/demo_*.yaml) and class-conditional (model.class_cond: true,
#            train.class_dropout 0.15), STEPS_TRAIN steps each, same seed. Re-running resumes.
# 2. sample  for every class, N pairs with `--classes CLASS` (--max-tries TRIES): the
#            unconditional pair by rejection, the conditional pair at each guidance weight,
#            and the conditional pair unconditioned (--guidance 0) by rejection.
#            A finished folder is kept; a stopped one resumes (--resume).
# 3. table   scripts/class_cond_table.py: share of first candidates holding the class, and
#            candidates per accepted pair, per class and setting.
# One thread everywhere (OMP_NUM_THREADS=1): the measurements share a 2-core machine.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PY:-.venv/bin/python}"
RUN_DIR="${RUN_DIR:-runs/classcond}"
SIZE="${SIZE:-32}"
STEPS_TRAIN="${STEPS_TRAIN:-300}"
N="${N:-16}"                  # pairs per class and setting
TRIES="${TRIES:-10}"          # --max-tries
SAMPLE_STEPS="${SAMPLE_STEPS:-50}"
GUIDANCE="${GUIDANCE:-1 2 4}"
CLASSES="${CLASSES:-scratch stain hole}"
STAGE="${STAGE:-all}"
export OMP_NUM_THREADS=1

run() { PYTHONPATH="$PWD" "$PY" -m defect_gen "$@"; }

if [ "$STAGE" = all ] || [ "$STAGE" = train ]; then
  [ -d "$RUN_DIR/data/images" ] || run make-demo-data "$RUN_DIR/data" --image_size "$SIZE"
  for kind in uncond cond; do
    extra=()
    [ "$kind" = cond ] && extra=(--set model.class_cond=true --set train.class_dropout=0.15)
    for role in large small; do
      run train --config "configs/demo_$role.yaml" --work_dir "$RUN_DIR/$kind/$role" --num_defect 3 \
        --set "data.root=$RUN_DIR/data" --set "model.image_size=$SIZE" --set "train.max_steps=$STEPS_TRAIN" \
        --set train.sample_every=0 --set train.save_every=100 --no-progress "${extra[@]}"
    done
  done
fi

sample() {  # sample KIND OUT [extra flags...]
  local kind=$1 out=$2; shift 2
  if [ -f "$out/.done" ]; then return; fi
  local resume=()
  [ -f "$out/manifest.jsonl" ] && resume=(--resume)
  run sample --large_recep "$RUN_DIR/$kind/large" --small_recep "$RUN_DIR/$kind/small" --step_inference 200 \
    --num_defect 3 --sample_dir "$out" --num_samples "$N" --batch_size "$N" --steps "$SAMPLE_STEPS" \
    --max-tries "$TRIES" --no-progress "${resume[@]}" "$@" || true   # a class with no accepted pair is a result
  touch "$out/.done"
}

if [ "$STAGE" = all ] || [ "$STAGE" = sample ]; then
  for cls in $CLASSES; do
    for w in $GUIDANCE; do
      sample cond "$RUN_DIR/samples/cond_w$w/$cls" --classes "$cls" --guidance "$w"
    done
    sample uncond "$RUN_DIR/samples/rejection/$cls" --classes "$cls"
    # The conditional pair unconditioned (guidance 0): rejection with the very same weights.
    sample cond "$RUN_DIR/samples/rejection_cond/$cls" --classes "$cls" --guidance 0
  done
fi

if [ "$STAGE" = all ] || [ "$STAGE" = table ]; then
  PYTHONPATH="$PWD" "$PY" scripts/class_cond_table.py "$RUN_DIR/samples" --num_samples "$N" --classes $CLASSES \
    --real "$RUN_DIR/data"
fi
