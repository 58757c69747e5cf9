#!/usr/bin/env bash
# The magnetic-tile usefulness study, end to end on a CPU: do generated pairs make a
# segmenter better than real pairs alone, and better than copy-paste?
#
#   bash experiments/magnetic_tile/run.sh                 # every stage, skipping finished work
#   STAGE=evaluate bash experiments/magnetic_tile/run.sh  # one stage: train | paint | evaluate
#   FOLDS=0 bash experiments/magnetic_tile/run.sh         # held-out report only, no per-class choice
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
#              plus copy-paste folders (source places; every place on training photos;
#              each pasted defect's light matched to its new surface, MATCH_LIGHT=1);
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
# With STAGE=all and PARALLEL=1 (the default) the work runs in two lanes, each with half the
# threads: the generator lane trains, paints, cross-validates the painted folders and evaluates
# the per-class mix; the baseline lane makes the copy-paste folders and trains their
# cross-validation and held-out segmenters meanwhile (logs in $RUN_DIR/logs).
# Every size is a variable; the defaults are docs/results.md's round 9 but for STEPS_TRAIN.
# Round 2 ran CONFIG=configs/magnetic_tile_paint.yaml BACKGROUNDS=good PLACES="random source"
# RATIOS=1,2,4 SEG_STEPS=1000 N_PAINT=160; rounds 3-4 changed BACKGROUNDS (docs/results.md).
set -euo pipefail
cd "$(dirname "$0")/../.."

PY="${PY:-.venv/bin/python}"
DATA="${DATA:-../shared/data/magnetic-tile}"
RUN_DIR="${RUN_DIR:-runs/mt_paint}"
STAGE="${STAGE:-all}"
CONFIG="${CONFIG:-configs/magnetic_tile_paint_clean.yaml}"  # the painting model's recipe
STEPS_TRAIN="${STEPS_TRAIN:-2000}"   # painting-model training steps (batch 16). Round 9's painted pairs came from
                                     # 3000 (the config's own; better cracks than 1000, round 7), which does not fit
                                     # 2.5 h here (~10 crops/s on one thread); the per-class choice falls back on
                                     # copy-paste for any class where the painted pairs do not help
N_PAINT="${N_PAINT:-160}"            # pairs per variant: ratio 2 of the 40 real pairs needs 80; cross-validated
                                     # (FOLDS=3) it needs 160, as pairs made from a validation photo are left out
PAINT_STEPS="${PAINT_STEPS:-25}"     # DDIM steps per painted window
STRENGTHS="${STRENGTHS:-1}"          # one folder per strength, e.g. STRENGTHS="1 0.3": paint_s1, paint_s0.3
PLACES="${PLACES:-source}"           # paint --place: random -> paint_sS, source -> paint_source_sS
BACKGROUNDS="${BACKGROUNDS:-same_class}"  # good: MT_Free photos; training: the 40 training photos (paint_train_*);
                                          # same_class: those of the pasted defect's class (paint_same_*)
MATCH_LIGHT="${MATCH_LIGHT:-1}"      # 1: copy-paste folders with paint --match_light (each pasted defect scaled to
                                     # the surface light of its new place; round 14), named cp_..._light
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
HELDOUT_PAINTED="${HELDOUT_PAINTED:-0}"  # 1: the painted folders on the held-out photos too (SEEDS more segmenters each)
COPY_PASTE="${COPY_PASTE:-0}"        # 1: evaluate's built-in random copy-paste onto MT_Free as well
PARALLEL="${PARALLEL:-1}"            # 1 (STAGE=all): the two lanes side by side; 0: one job at a time
THREADS="${THREADS:-$(nproc)}"       # CPU threads in all; each lane gets half

if [ ! -d "$DATA" ]; then
  echo "no magnetic-tile data at $DATA (set DATA=...)" >&2
  exit 2
fi
MODEL="$RUN_DIR/$(basename "$CONFIG" .yaml | sed 's/^magnetic_tile_//')"  # runs/mt_paint/paint_clean, .../paint
GOOD="$DATA/MT_Free"
LOGS="$RUN_DIR/logs"
MIX="$RUN_DIR/samples/per_class"

# Folder names: paint_[train_|same_][source_]sS for painted pairs, copy_paste_source (MT_Free
# photos) and cp_{train,same}_{random,source} (training photos) for copy-paste folders, with
# _light at the end when MATCH_LIGHT=1.
bg_flags() { if [ "$1" = good ]; then echo "--good $GOOD"; else echo "--backgrounds $1"; fi; }
bg_tag() { case "$1" in training) echo "train_" ;; same_class) echo "same_" ;; esac; }
LIGHT_TAG=""; LIGHT=()
case "$MATCH_LIGHT" in
  1) LIGHT_TAG="_light"; LIGHT=(--match_light) ;;
  0) ;;
  *) echo "MATCH_LIGHT must be 0 or 1, got '$MATCH_LIGHT'" >&2; exit 2 ;;
esac
PAINTED=(); CP=()  # (output folder, background, place[, strength]) as "dir|bg|place|s"
for bg in $BACKGROUNDS; do
  for place in $PLACES; do
    tag="$(bg_tag "$bg")"; [ "$place" = source ] && tag="${tag}source_"
    for s in $STRENGTHS; do PAINTED+=("$RUN_DIR/samples/paint_${tag}s$s|$bg|$place|$s"); done
    # random copy-paste onto MT_Free is evaluate's built-in baseline (COPY_PASTE=1), not a folder
    if [ "$bg" != good ]; then CP+=("$RUN_DIR/samples/cp_$(bg_tag "$bg")$place$LIGHT_TAG|$bg|$place|0")
    elif [ "$place" = source ]; then CP+=("$RUN_DIR/samples/copy_paste_source$LIGHT_TAG|$bg|$place|0"); fi
  done
done
dirs() { local x; for x in "$@"; do echo "${x%%|*}"; done; }
mapfile -t PAINTED_DIRS < <(dirs "${PAINTED[@]}")
mapfile -t CP_DIRS < <(dirs "${CP[@]}")
# The real split is exactly the generator's: its selected_files.json.
REAL=(--real "$CONFIG" --set "data.root=$DATA" --set "data.selection_file=$MODEL/selected_files.json")
SEG=(--steps "$SEG_STEPS" --real_finish "$REAL_FINISH" --real_share "$REAL_SHARE" --no-progress)

train_model() {  # resumes from the latest checkpoint in $MODEL
  "$PY" -m defect_gen train --config "$CONFIG" --work_dir "$MODEL" --num_defect 4 \
    --set "data.root=$DATA" --set "train.max_steps=$STEPS_TRAIN" --no-progress
}

make_folders() {  # paint or copy-paste each "dir|bg|place|strength"; a finished folder is kept
  local spec out bg place s
  for spec in "$@"; do
    IFS='|' read -r out bg place s <<< "$spec"
    if [ -f "$out/paint_settings.json" ]; then echo "$out: done"; continue; fi
    # --overwrite: a folder without paint_settings.json is a run that was stopped midway
    if [ "$s" = 0 ]; then
      # shellcheck disable=SC2046
      "$PY" -m defect_gen paint --copy-paste --config "$CONFIG" --set "data.root=$DATA" \
        --set "data.selection_file=$MODEL/selected_files.json" $(bg_flags "$bg") --sample_dir "$out" \
        --num_samples "$N_PAINT" --place "$place" --seed 1000 "${LIGHT[@]}" --overwrite --no-progress
    else
      # shellcheck disable=SC2046
      "$PY" -m defect_gen paint --model "$MODEL" $(bg_flags "$bg") --sample_dir "$out" --num_samples "$N_PAINT" \
        --strength "$s" --steps "$PAINT_STEPS" --place "$place" --seed 1000 --overwrite --no-progress
    fi
  done
}

show() { sed -n '/^## Segmentation/,/^!\[/p' "$1/report.md"; }

cross_validate() {  # the folders given, cross-validated over the 40 training pairs (finished segmenters cached)
  # No built-in --copy-paste here: it would paste the validation pairs' defects too; the
  # copy-paste folders record their sources, so they are cross-validated like the painted ones.
  "$PY" -m defect_gen evaluate "${REAL[@]}" --synthetic "$@" --out "$RUN_DIR/report_cv" \
    --folds "$FOLDS" --ratios "$RATIOS" --seeds "$CV_SEEDS" "${SEG[@]}"
}

held_out() {  # real only and the folders given (+ built-in copy-paste) on the held-out photos
  local base=()
  [ "$COPY_PASTE" = 1 ] && base=(--copy-paste "$GOOD")
  [ "$#" -gt 0 ] && base+=(--synthetic "$@")
  if [ "${#base[@]}" = 0 ]; then echo "no held-out report: no copy-paste folder (HELDOUT_PAINTED=1 or COPY_PASTE=1 add one)"; return 0; fi
  "$PY" -m defect_gen evaluate "${REAL[@]}" "${base[@]}" --out "$RUN_DIR/report" --ratios "$RATIOS" \
    --seeds "$SEEDS" "${SEG[@]}"
}

choose_mix() {  # mix --choose the per-class best folder into samples/per_class; fails when none helps
  local at="${RATIOS##*,}"  # the choice compares the folders at the last ratio
  if [ ! -f "$MIX/mix_settings.json" ]; then
    mkdir -p "$LOGS"
    # its table is kept, for the summary at the end
    "$PY" -m defect_gen mix --choose "$RUN_DIR/report_cv" --ratio "$at" --out "$MIX" 2>&1 | tee "$LOGS/per_class_choice.txt"
    [ "${PIPESTATUS[0]}" = 0 ] || return 1
  elif [ -f "$LOGS/per_class_choice.txt" ]; then
    cat "$LOGS/per_class_choice.txt"
  fi
  return 0
}

evaluate_mix() {  # the per-class mix on the held-out photos
  # As many generated pairs per chosen class as the folders had at that ratio: ratio x (chosen / all classes).
  local mix_ratio
  mix_ratio="$("$PY" -c 'import json, sys
takes = json.load(open(sys.argv[1]))["takes"]
classes = json.load(open(sys.argv[2]))["classes"]
print(round(float(sys.argv[3]) * sum(len(t["classes"]) for t in takes) / len(classes), 4))' \
    "$MIX/mix_settings.json" "$RUN_DIR/report_cv/results.json" "${RATIOS##*,}")"
  # Its own report (its ratio differs), sharing the held-out report's cached real-only segmenters.
  mkdir -p "$RUN_DIR/report/segmenters" "$RUN_DIR/report_per_class"
  [ -e "$RUN_DIR/report_per_class/segmenters" ] || ln -s ../report/segmenters "$RUN_DIR/report_per_class/segmenters"
  "$PY" -m defect_gen evaluate "${REAL[@]}" --synthetic "$MIX" --out "$RUN_DIR/report_per_class" \
    --ratios "$mix_ratio" --seeds "$SEEDS" "${SEG[@]}"
}

evaluate_all() {  # cross-validation and choice, then the held-out reports; finished segmenters are reused
  if [ "$FOLDS" -gt 0 ]; then
    cross_validate "${PAINTED_DIRS[@]}" "${CP_DIRS[@]}"
    show "$RUN_DIR/report_cv"
  fi
  local heldout=("${CP_DIRS[@]}")
  [ "$HELDOUT_PAINTED" = 1 ] && heldout=("${PAINTED_DIRS[@]}" "${heldout[@]}")
  held_out "${heldout[@]}"
  [ -f "$RUN_DIR/report/report.md" ] && show "$RUN_DIR/report"
  if [ "$FOLDS" -gt 0 ] && [ "$PER_CLASS" = 1 ]; then
    if choose_mix; then
      evaluate_mix
      show "$RUN_DIR/report_per_class"
    else
      echo "no per-class mix (see the line above)" >&2
    fi
  fi
  return 0
}

# --- two lanes on a small machine -------------------------------------------------------------
# The copy-paste baselines need no model: while one lane trains the painting model and paints,
# the other makes the copy-paste folders and trains their cross-validation and held-out
# segmenters (real only first). Then the generator lane cross-validates the painted folders
# (real only and copy-paste already cached), chooses the per-class mix and trains its held-out
# segmenters. Each lane gets half the threads: two 1-thread jobs on 2 cores train more per hour
# than one 2-thread job. The last step reuses every cached segmenter and prints the tables.

wait_for() {  # wait_for FILE PID: until FILE exists; fails if PID ends first without making it
  until [ -f "$1" ]; do
    if ! kill -0 "$2" 2>/dev/null; then [ -f "$1" ] && break; return 1; fi
    sleep 2
  done
}

join_lane() {  # join_lane PID LOG NAME: wait for a lane; on failure show its log's end
  if ! wait "$1"; then
    echo "the $3 lane failed; the end of $2:" >&2
    tail -n 20 "$2" >&2
    exit 1
  fi
}

lane_failed() { echo "the generator lane failed; the end of $1:" >&2; tail -n 20 "$1" >&2; exit 1; }

say() { echo "[$(date +%H:%M:%S)] $*"; }

run_lanes() {
  local half=$(( THREADS / 2 > 0 ? THREADS / 2 : 1 )) gen base cv_done="$LOGS/cv_baselines.done"
  local glog="$LOGS/generator.log" blog="$LOGS/baselines.log"
  mkdir -p "$LOGS"; rm -f "$cv_done"
  # A stopped script stops its lanes (and the python each one is running).
  trap 'for p in $(jobs -p); do pkill -P "$p" 2>/dev/null; kill "$p" 2>/dev/null; done; true' EXIT
  trap 'exit 130' INT TERM
  export OMP_NUM_THREADS=$half
  say "generator lane: training, then painting (log $glog)"
  ( train_model; make_folders "${PAINTED[@]}" ) > "$glog" 2>&1 &
  gen=$!
  if ! wait_for "$MODEL/selected_files.json" "$gen"; then join_lane "$gen" "$glog" generator; fi
  say "baseline lane: copy-paste folders, their cross-validation, then the held-out real-only and copy-paste segmenters (log $blog)"
  ( make_folders "${CP[@]}"
    if [ "$FOLDS" -gt 0 ] && [ "${#CP_DIRS[@]}" -gt 0 ]; then cross_validate "${CP_DIRS[@]}"; fi
    touch "$cv_done"
    held_out "${CP_DIRS[@]}" ) > "$blog" 2>&1 &
  base=$!
  join_lane "$gen" "$glog" generator
  say "painted folders done"
  if [ "$FOLDS" -gt 0 ]; then
    wait_for "$cv_done" "$base" || join_lane "$base" "$blog" baseline
    say "generator lane: cross-validating the painted folders"
    cross_validate "${PAINTED_DIRS[@]}" "${CP_DIRS[@]}" >> "$glog" 2>&1 || lane_failed "$glog"
    if [ "$PER_CLASS" = 1 ] && choose_mix >> "$glog" 2>&1; then
      say "generator lane: the per-class mix on the held-out photos"
      evaluate_mix >> "$glog" 2>&1 || lane_failed "$glog"
    fi
  fi
  join_lane "$base" "$blog" baseline
  trap - EXIT INT TERM
  say "both lanes done; the reports (cached segmenters reused):"
  export OMP_NUM_THREADS=$THREADS
  evaluate_all
  say "done"
}

main() {
  if [ "$STAGE" = all ] && [ "$PARALLEL" = 1 ]; then run_lanes; return; fi
  if [ "$STAGE" = all ] || [ "$STAGE" = train ]; then train_model; fi
  if [ "$STAGE" = all ] || [ "$STAGE" = paint ]; then make_folders "${PAINTED[@]}" "${CP[@]}"; fi
  if [ "$STAGE" = all ] || [ "$STAGE" = evaluate ]; then evaluate_all; fi
}

# One line, read whole before it runs: editing this file while it runs changes nothing.
main; exit
