#!/usr/bin/env bash
# The magnetic-tile usefulness study, end to end on a CPU: do generated pairs make a
# segmenter better than real pairs alone, and better than copy-paste?
#
#   bash scripts/experiment_magnetic_tile.sh                 # every stage, skipping finished work
#   STAGE=evaluate bash scripts/experiment_magnetic_tile.sh  # one stage: train | paint | evaluate
#   FOLDS=3 bash scripts/experiment_magnetic_tile.sh         # also cross-validate on the training pairs
#
# 1. train     the painting model (CONFIG, by default configs/magnetic_tile_paint_clean.yaml: a
#              small-RF UNet on 64 px native-resolution crops of the 40 few-shot pairs, 10 per
#              class, seed 0, drawing the photo for a clean mask); re-running resumes from the
#              latest checkpoint.
# 2. paint     pairs painted into the training photos that hold a defect of the same class
#              (BACKGROUNDS=same_class, the default), or into the 40 training photos
#              (training) or the 150 defect-free MT_Free photos (good), one folder per
#              strength (1: defects drawn from noise inside the placed training masks;
#              0.3: the pasted real defect redrawn from t = 300) and placement
#              (random spots, or --place source: where the defect was in its own photo),
#              plus copy-paste folders (source places; every place on training photos);
#              a finished folder is kept.
# 3. evaluate  `defect-gen evaluate` at 128 px: real only, real + copy-paste, real + each
#              folder, at every ratio, 3 segmenter seeds; finished segmenters are cached in
#              REPORT/segmenters, so a stopped evaluation resumes. Prints the table.
# Every size is a variable; the defaults are docs/results.md's round 7 (an estimate, about 2 h on
# a 2-core CPU: training ~45 min with 2 threads, painting ~5 min, 12 segmenters of 2000 steps at
# ~5-8 min; not yet run end to end at these sizes).
# Round 2 ran CONFIG=configs/magnetic_tile_paint.yaml BACKGROUNDS=good PLACES="random source"
# RATIOS=1,2,4 SEG_STEPS=1000 N_PAINT=160; rounds 3-4 changed BACKGROUNDS (docs/results.md).
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PY:-.venv/bin/python}"
DATA="${DATA:-../shared/data/magnetic-tile}"
RUN_DIR="${RUN_DIR:-runs/mt_paint}"
STAGE="${STAGE:-all}"
CONFIG="${CONFIG:-configs/magnetic_tile_paint_clean.yaml}"  # the painting model's recipe
STEPS_TRAIN="${STEPS_TRAIN:-3000}"   # painting-model training steps (batch 16), the config's own; ~45 min at 18 crops/s
                                     # (2 threads); 3000 draws better cracks than 1000 (round 7), yet its pairs
                                     # are -0.5 over 7 seeds at ratio 2 (round 8; copy-paste: +0.3)
N_PAINT="${N_PAINT:-80}"             # pairs per variant: ratio 2 of the 40 real pairs
PAINT_STEPS="${PAINT_STEPS:-25}"     # DDIM steps per painted window
STRENGTHS="${STRENGTHS:-1}"          # one folder per strength, e.g. STRENGTHS="1 0.3": paint_s1, paint_s0.3
PLACES="${PLACES:-source}"           # paint --place: random -> paint_sS, source -> paint_source_sS
BACKGROUNDS="${BACKGROUNDS:-same_class}"  # good: MT_Free photos; training: the 40 training photos (paint_train_*);
                                          # same_class: those of the pasted defect's class (paint_same_*)
RATIOS="${RATIOS:-2}"                # best of 0.5,1,2,4 for copy-paste in round 7 (chosen on the held-out photos)
SEEDS="${SEEDS:-3}"
SEG_STEPS="${SEG_STEPS:-2000}"       # segmenter steps; at 1000 the segmenters had not settled (round 4)
REAL_FINISH="${REAL_FINISH:-0}"      # evaluate --real_finish: share of the last segmenter steps on real pairs only
REAL_SHARE="${REAL_SHARE:-0}"        # evaluate --real_share: share of each segmenter batch from real pairs (0: uniform)
FOLDS="${FOLDS:-0}"                  # > 0: also cross-validate over the 40 training pairs (evaluate --folds, no
                                     # held-out photos, as a user would choose a ratio) into $RUN_DIR/report_cv;
                                     # costs FOLDS x the segmenters; ratio 2 needs N_PAINT=160 at FOLDS=3 (pairs
                                     # made from a validation photo are left out of its fold)

if [ ! -d "$DATA" ]; then
  echo "no magnetic-tile data at $DATA (set DATA=...)" >&2
  exit 2
fi
MODEL="$RUN_DIR/$(basename "$CONFIG" .yaml | sed 's/^magnetic_tile_//')"  # runs/mt_paint/paint_clean, .../paint
GOOD="$DATA/MT_Free"

if [ "$STAGE" = all ] || [ "$STAGE" = train ]; then
  "$PY" -m defect_gen train --config "$CONFIG" --work_dir "$MODEL" --num_defect 4 \
    --set "data.root=$DATA" --set "train.max_steps=$STEPS_TRAIN" --no-progress
fi

# Folder names: paint_[train_|same_][source_]sS for painted pairs, copy_paste_source (MT_Free
# photos) and cp_{train,same}_{random,source} (training photos) for copy-paste folders.
bg_flags() { if [ "$1" = good ]; then echo "--good $GOOD"; else echo "--backgrounds $1"; fi; }
bg_tag() { case "$1" in training) echo "train_" ;; same_class) echo "same_" ;; esac; }

if [ "$STAGE" = all ] || [ "$STAGE" = paint ]; then
  for bg in $BACKGROUNDS; do
    for place in $PLACES; do
      tag="$(bg_tag "$bg")"; [ "$place" = source ] && tag="${tag}source_"
      for s in $STRENGTHS; do
        out="$RUN_DIR/samples/paint_${tag}s$s"
        if [ -f "$out/paint_settings.json" ]; then echo "$out: done"; continue; fi
        # --overwrite: a folder without paint_settings.json is a run that was stopped midway
        # shellcheck disable=SC2046
        "$PY" -m defect_gen paint --model "$MODEL" $(bg_flags "$bg") --sample_dir "$out" --num_samples "$N_PAINT" \
          --strength "$s" --steps "$PAINT_STEPS" --place "$place" --seed 1000 --overwrite --no-progress
      done
      # copy-paste as a folder (random copy-paste onto MT_Free is evaluate's built-in baseline)
      out="$RUN_DIR/samples/copy_paste_source"
      [ "$bg" != good ] && out="$RUN_DIR/samples/cp_$(bg_tag "$bg")$place"
      if { [ "$bg" != good ] || [ "$place" = source ]; } && [ ! -f "$out/paint_settings.json" ]; then
        # shellcheck disable=SC2046
        "$PY" -m defect_gen paint --copy-paste --config "$CONFIG" --set "data.root=$DATA" \
          --set "data.selection_file=$MODEL/selected_files.json" $(bg_flags "$bg") --sample_dir "$out" \
          --num_samples "$N_PAINT" --place "$place" --seed 1000 --overwrite --no-progress
      fi
    done
  done
fi

if [ "$STAGE" = all ] || [ "$STAGE" = evaluate ]; then
  SYN=()
  for bg in $BACKGROUNDS; do
    for place in $PLACES; do
      tag="$(bg_tag "$bg")"; [ "$place" = source ] && tag="${tag}source_"
      for s in $STRENGTHS; do SYN+=("$RUN_DIR/samples/paint_${tag}s$s"); done
      if [ "$bg" != good ]; then SYN+=("$RUN_DIR/samples/cp_$(bg_tag "$bg")$place")
      elif [ "$place" = source ]; then SYN+=("$RUN_DIR/samples/copy_paste_source"); fi
    done
  done
  # The real split is exactly the generator's: its selected_files.json.
  "$PY" -m defect_gen evaluate --real "$CONFIG" --set "data.root=$DATA" \
    --set "data.selection_file=$MODEL/selected_files.json" --copy-paste "$GOOD" --synthetic "${SYN[@]}" \
    --out "$RUN_DIR/report" --ratios "$RATIOS" --seeds "$SEEDS" --steps "$SEG_STEPS" \
    --real_finish "$REAL_FINISH" --real_share "$REAL_SHARE" --no-progress
  sed -n '/^## Segmentation/,/^!\[/p' "$RUN_DIR/report/report.md"
  if [ "$FOLDS" -gt 0 ]; then
    # No built-in --copy-paste here: it would paste the validation pairs' defects too; the
    # copy-paste folders record their sources, so they are cross-validated like the painted ones.
    "$PY" -m defect_gen evaluate --real "$CONFIG" --set "data.root=$DATA" \
      --set "data.selection_file=$MODEL/selected_files.json" --synthetic "${SYN[@]}" \
      --out "$RUN_DIR/report_cv" --folds "$FOLDS" --ratios "$RATIOS" --seeds "$SEEDS" --steps "$SEG_STEPS" \
      --real_finish "$REAL_FINISH" --real_share "$REAL_SHARE" --no-progress
    sed -n '/^## Segmentation/,/^!\[/p' "$RUN_DIR/report_cv/report.md"
  fi
fi
