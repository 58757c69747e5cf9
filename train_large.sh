#!/usr/bin/env bash
# Train the large-receptive-field model (global layout).
#   bash train_large.sh --config configs/large.yaml --work_dir runs/large --num_defect 3 [--set k=v ...]
# --config defaults to configs/large.yaml; NPROC=N launches N processes through torchrun.
exec bash "$(dirname "$0")/scripts/launch.sh" train --config "$(dirname "$0")/configs/large.yaml" "$@"
