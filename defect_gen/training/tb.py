"""Optional TensorBoard scalars: the rows of metrics.jsonl, also written to WORK_DIR/tb/.

Only when `torch.utils.tensorboard` imports (the `tensorboard` package is installed:
`pip install -e .[tensorboard]`) and `train.tensorboard` is true; otherwise nothing happens
and metrics.jsonl stays the record. Never required, never an error: a run must not fail
over a viewer.
"""

from __future__ import annotations

import math
import os

TB_DIR = "tb"


class ScalarWriter:
    """`write(row)` adds each numeric field of a metrics row as a scalar at row["step"]."""

    def __init__(self, work_dir: str, enabled: bool = True):
        self.writer = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is not installed: metrics.jsonl alone
            return
        self.writer = SummaryWriter(os.path.join(work_dir, TB_DIR))

    def write(self, row: dict) -> None:
        if self.writer is None:
            return
        for key, value in row.items():
            # the same names as in metrics.jsonl; None (an empty timestep quarter) is skipped
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool) \
                    and math.isfinite(value):
                self.writer.add_scalar(key, value, row["step"])
        self.writer.flush()  # a killed run keeps what was logged, as metrics.jsonl does

    def close(self) -> None:
        """Flush and close the event file; `TrainLoop.run` calls it at the end and on an error.
        A second call does nothing."""
        writer, self.writer = self.writer, None
        if writer is not None:
            writer.close()
