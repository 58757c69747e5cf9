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


def train_tiny_models(root, num_timesteps: int):
    """A 1-step-trained large (attention) and small model at 16 px on 4 demo pairs, in
    root/large and root/small (quality is irrelevant: fault and safety tests need files)."""
    from defect_gen.config import from_dict
    from defect_gen.data.demo import make_demo_data
    from defect_gen.training.loop import TrainLoop

    make_demo_data(str(root / "data"), num_images=4, image_size=16, seed=0)
    for name, shape in (("large", {"channel_mult": [1, 2], "attention_downsample": [2]}),
                        ("small", {"channel_mult": [1], "attention_downsample": [], "middle_block": False})):
        cfg = from_dict({"model": {"image_size": 16, "model_channels": 32, "num_res_blocks": 1,
                                   "num_head_channels": 32, **shape},
                         "diffusion": {"num_timesteps": num_timesteps},
                         "data": {"root": str(root / "data"), "classes": ["scratch", "stain", "hole"]},
                         "train": {"batch_size": 2, "max_steps": 1}})
        TrainLoop.from_config(cfg, str(root / name), torch.device("cpu"), progress=False).run()
    return root
