#!/usr/bin/env bash
# Run `defect-gen ARGS...` with the project's environment; with NPROC > 1, through torchrun.
#
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT on every node (torchrun's own
# meaning); NPROC is the number of processes (GPUs) per node.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
if [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"; else PY="${PYTHON:-python3}"; fi
NPROC="${NPROC:-1}"
if [ "$NPROC" -gt 1 ]; then
  exec "$PY" -m torch.distributed.run --nproc_per_node="$NPROC" --nnodes="${NNODES:-1}" \
    --node_rank="${NODE_RANK:-0}" --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --master_port="${MASTER_PORT:-29500}" -m defect_gen "$@"
fi
exec "$PY" -m defect_gen "$@"
