#!/usr/bin/env bash
# Train the small-receptive-field model (local texture).
#   bash train_small.sh --config configs/small.yaml --work_dir runs/small --num_defect 3 [--set k=v ...]
# --config defaults to configs/small.yaml; NPROC=N launches N processes through torchrun.
exec bash "$(dirname "$0")/scripts/launch.sh" train --config "$(dirname "$0")/configs/small.yaml" "$@"
