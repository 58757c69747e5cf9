#!/usr/bin/env bash
# The magnetic-tile usefulness study, end to end on a CPU: do generated pairs make a
# segmenter better than real pairs alone, and better than copy-paste?
#
#   bash scripts/experiment_magnetic_tile.sh                 # every stage, skipping finished work
#   STAGE=evaluate bash scripts/experiment_magnetic_tile.sh  # one stage: train | paint | evaluate
#   FOLDS=0 bash scripts/experiment_magnetic_tile.sh         # held-out report only, no per-class choice
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
# 3. evaluate  (FOLDS > 0) `defect-gen evaluate --folds` over the 40 training pairs, no held-out
#              photo: real only and real + each folder, per class, into $RUN_DIR/report_cv; then
#              (PER_CLASS=1) `defect-gen mix --choose` takes for each class the folder that scored
#              best on it there, where it beats real only, into samples/per_class, at the same
#              number of generated pairs per class. Then `defect-gen evaluate` at 128 px on the
#              held-out photos: real only, real + the copy-paste folder(s), real + per_class (and
#              the painted folders themselves with HELDOUT_PAINTED=1, the random copy-paste onto
#              MT_Free with COPY_PASTE=1), SEEDS segmenter seeds; finished segmenters are cached in
#              REPORT/segmenters, so a stopped evaluation resumes. Prints the tables.
# Every size is a variable; the defaults are docs/results.md's round 9 (an estimate, about 2.7 h on
# a 2-core CPU: training ~45 min with 2 threads, painting ~10 min, 9 cross-validation and 9
# held-out segmenters of 2000 steps at ~6 min; not yet run end to end at these sizes).
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
N_PAINT="${N_PAINT:-160}"            # pairs per variant: ratio 2 of the 40 real pairs needs 80; cross-validated
                                     # (FOLDS=3) it needs 160, as pairs made from a validation photo are left out
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
FOLDS="${FOLDS:-3}"                  # > 0: cross-validate over the 40 training pairs (evaluate --folds, no
                                     # held-out photos, as a user would choose) into $RUN_DIR/report_cv; costs
                                     # FOLDS x the segmenters of CV_SEEDS seeds
CV_SEEDS="${CV_SEEDS:-1}"
PER_CLASS="${PER_CLASS:-1}"          # 1 (with FOLDS > 0): mix --choose the cross-validated best folder per class
HELDOUT_PAINTED="${HELDOUT_PAINTED:-0}"  # 1: the painted folders on the held-out photos too (3 more segmenters each)
COPY_PASTE="${COPY_PASTE:-0}"        # 1: evaluate's built-in random copy-paste onto MT_Free as well

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
  PAINTED=(); CP=()
  for bg in $BACKGROUNDS; do
    for place in $PLACES; do
      tag="$(bg_tag "$bg")"; [ "$place" = source ] && tag="${tag}source_"
      for s in $STRENGTHS; do PAINTED+=("$RUN_DIR/samples/paint_${tag}s$s"); done
      if [ "$bg" != good ]; then CP+=("$RUN_DIR/samples/cp_$(bg_tag "$bg")$place")
      elif [ "$place" = source ]; then CP+=("$RUN_DIR/samples/copy_paste_source"); fi
    done
  done
  # The real split is exactly the generator's: its selected_files.json.
  REAL=(--real "$CONFIG" --set "data.root=$DATA" --set "data.selection_file=$MODEL/selected_files.json")
  SEG=(--steps "$SEG_STEPS" --real_finish "$REAL_FINISH" --real_share "$REAL_SHARE" --no-progress)
  HELDOUT=("${CP[@]}")
  [ "$HELDOUT_PAINTED" = 1 ] && HELDOUT=("${PAINTED[@]}" "${HELDOUT[@]}")
  if [ "$FOLDS" -gt 0 ]; then
    # No built-in --copy-paste here: it would paste the validation pairs' defects too; the
    # copy-paste folders record their sources, so they are cross-validated like the painted ones.
    "$PY" -m defect_gen evaluate "${REAL[@]}" --synthetic "${PAINTED[@]}" "${CP[@]}" --out "$RUN_DIR/report_cv" \
      --folds "$FOLDS" --ratios "$RATIOS" --seeds "$CV_SEEDS" "${SEG[@]}"
    sed -n '/^## Segmentation/,/^!\[/p' "$RUN_DIR/report_cv/report.md"
    if [ "$PER_CLASS" = 1 ]; then
      MIX="$RUN_DIR/samples/per_class"
      at="${RATIOS##*,}"  # the choice compares the folders at the last ratio
      if [ ! -f "$MIX/mix_settings.json" ] && \
         ! "$PY" -m defect_gen mix --choose "$RUN_DIR/report_cv" --ratio "$at" --out "$MIX"; then
        echo "no per-class mix (see the line above); the held-out report follows without one" >&2
        MIX=""
      fi
    fi
  fi
  if [ -n "${MIX:-}" ]; then
    # As many generated pairs per chosen class as the folders had at that ratio: ratio x (chosen / all classes).
    mix_ratio="$("$PY" -c 'import json, sys
takes = json.load(open(sys.argv[1]))["takes"]
classes = json.load(open(sys.argv[2]))["classes"]
print(round(float(sys.argv[3]) * sum(len(t["classes"]) for t in takes) / len(classes), 4))' \
      "$MIX/mix_settings.json" "$RUN_DIR/report_cv/results.json" "$at")"
    # Its own report (its ratio differs), sharing the held-out report's cached real-only segmenters.
    mkdir -p "$RUN_DIR/report/segmenters" "$RUN_DIR/report_per_class"
    [ -e "$RUN_DIR/report_per_class/segmenters" ] || ln -s ../report/segmenters "$RUN_DIR/report_per_class/segmenters"
  fi
  BASE=(); [ "$COPY_PASTE" = 1 ] && BASE=(--copy-paste "$GOOD")
  [ "${#HELDOUT[@]}" -gt 0 ] && BASE+=(--synthetic "${HELDOUT[@]}")
  "$PY" -m defect_gen evaluate "${REAL[@]}" "${BASE[@]}" --out "$RUN_DIR/report" --ratios "$RATIOS" \
    --seeds "$SEEDS" "${SEG[@]}"
  sed -n '/^## Segmentation/,/^!\[/p' "$RUN_DIR/report/report.md"
  if [ -n "${MIX:-}" ]; then
    "$PY" -m defect_gen evaluate "${REAL[@]}" --synthetic "$MIX" --out "$RUN_DIR/report_per_class" \
      --ratios "$mix_ratio" --seeds "$SEEDS" "${SEG[@]}"
    sed -n '/^## Segmentation/,/^!\[/p' "$RUN_DIR/report_per_class/report.md"
  fi
fi
