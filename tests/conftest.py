import os

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
REFERENCE = os.path.join(SHARED, "reference", "official-defect-gen")

torch.set_num_threads(min(2, torch.get_num_threads()))


def reference_file(name: str) -> str:
    path = os.path.join(REFERENCE, name)
    if not os.path.isfile(path):
        pytest.skip(f"{path} is absent: the published-implementation fixtures live in ../shared, "
                    f"which only the project's own machines have")
    return path
