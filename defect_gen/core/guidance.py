"""Class conditioning at sampling time: which classes a pair holds, and classifier-free guidance.

A class-conditional network (`model.class_cond`) takes y = [multi-hot | given] (see
`unet.class_condition`). Trained with condition dropout (`train.class_dropout`), the one
network gives both the conditional prediction and the unconditional one, and guidance
(Ho & Salimans 2022) extrapolates from the second towards the first:

    out = uncond + W * (cond - uncond)

W = 1 is the plain conditional prediction (one forward pass), W = 0 the unconditional one,
W > 1 pushes harder towards the asked-for classes. The combination is made on the network's
own output, whatever it predicts (x0, eps or v): with x_t and t fixed each of them is an
affine function of the others, and the weights (1 - W) + W sum to one, so guiding x0 or guiding
eps gives the same step. The wrapper therefore sits where the network does, before
`GaussianDiffusion.denoiser` converts and clips, and every sampler works with it unchanged.
"""

from __future__ import annotations

from typing import Callable

import torch

from defect_gen.core.masks import mask_to_index
from defect_gen.core.unet import class_condition
from defect_gen.errors import ConfigError

Network = Callable[..., torch.Tensor]  # (x_t, t[, y]) -> the network's output


def present_classes(index: torch.Tensor, num_defect: int) -> torch.Tensor:
    """(B, H, W) class-index maps -> (B, K) bool: which defect classes 1..K have any pixel."""
    classes = torch.arange(1, num_defect + 1, device=index.device)
    return (index.reshape(index.shape[0], -1, 1) == classes).any(dim=1)


def data_condition(x0: torch.Tensor, num_defect: int, drop: torch.Tensor | None = None) -> torch.Tensor:
    """The condition of training pairs (B, 3 + K + 1, H, W), read from their one-hot masks (after
    the crop and flips the model sees); rows where `drop` is True are unconditional."""
    present = present_classes(mask_to_index(x0[:, 3:].float()), num_defect)
    return class_condition(present, None if drop is None else ~drop)


def class_condition_of_masks(index: torch.Tensor, num_defect: int) -> torch.Tensor:
    """The condition of given masks (B, H, W): the classes each one holds."""
    return class_condition(present_classes(index, num_defect))


def wanted_condition(required: list[int], num_defect: int, rows: int, device=None) -> torch.Tensor:
    """The condition "holds these classes" (1-based indices, as --classes gives) for `rows` rows.

    Classes not listed are asked to be absent: the model learnt the full multi-hot, and the
    pairs with exactly the listed classes are what --classes asks for most directly.
    """
    present = torch.zeros(rows, num_defect, dtype=torch.bool, device=device)
    for c in required:
        present[:, c - 1] = True
    return class_condition(present)


def guided(network: Network, y: torch.Tensor | None, weight: float) -> Callable:
    """The class-conditional network as an (x_t, t) network held to condition y (B, K + 1).

    y None: the unconditional prediction. weight 1: one conditional pass; otherwise the
    conditional and unconditional rows go through one batched pass (twice the batch).
    """
    if y is None or weight == 0.0:  # W = 0 is the unconditional prediction: one pass, no condition
        return lambda x, t: network(x, t)
    if weight == 1.0:
        return lambda x, t: network(x, t, y)
    null = torch.zeros_like(y)

    def forward(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = network(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]))
        cond, uncond = out.chunk(2)
        return uncond + weight * (cond - uncond)

    return forward


def check_guidance(weight: float | None, conditional: list[bool]) -> float:
    """The guidance weight for models whose class_cond flags are `conditional`: the weight to use."""
    if weight is not None and not any(conditional):
        raise ConfigError.with_params("{guidance} needs a class-conditional model (model.class_cond: true); these "
                                      "models are unconditional: {classes} picks by rejection instead")
    if weight is not None and not 0.0 <= weight <= 100.0:
        raise ConfigError.with_params(f"{{guidance}} must be in [0, 100] (1 = plain conditional), got {weight}")
    return 1.0 if weight is None else float(weight)
