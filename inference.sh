#!/usr/bin/env bash
# Generate image + mask pairs: large model for t >= S, small model for t < S.
#   bash inference.sh --large_recep runs/large --small_recep runs/small \
#        --step_inference 200 --num_defect 3 --sample_dir samples [--steps 100 --num_samples 64 ...]
# Control: --classes a,b | --mask DIR | --good DIR [--mask DIR]; output: --layout paired|mvtec|defect_spectrum,
# --min-defect-pixels N, --keep-empty, --resume, --overwrite. All flags: bash inference.sh --help
# NPROC=N splits the samples across N processes through torchrun.
exec bash "$(dirname "$0")/scripts/launch.sh" sample "$@"
