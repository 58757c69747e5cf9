"""The segmentation model that judges the generated pairs: a small UNet trained from scratch.

No pretrained weights can be downloaded here, so the built-in segmenter is a plain
encoder-decoder (three resolutions, BatchNorm, skip connections) that trains in seconds on
a CPU at 32-64 px. torchvision's DeepLabV3 (randomly initialised, ResNet-50) is an option
where torchvision imports; it is imported only when asked for.

Training draws batches uniformly from the given pairs (real, or real + synthetic), with
random flips, and minimises cross-entropy plus a soft Dice loss over the defect classes:
defects cover a few percent of the pixels, and cross-entropy alone settles for "all
background" on so few images.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from defect_gen.data.dataset import crop_origin
from defect_gen.errors import ConfigError

SEGMENTERS = ("unet", "deeplabv3")


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class TinyUNet(nn.Module):
    """UNet with len(widths) resolutions; logits (B, num_classes, H, W). H, W divisible by 2**(depth-1)."""

    def __init__(self, num_classes: int, widths: tuple[int, ...] = (16, 32, 64)):
        super().__init__()
        self.down = nn.ModuleList()
        cin = 3
        for w in widths:
            self.down.append(_block(cin, w))
            cin = w
        self.up = nn.ModuleList(_block(widths[i] + widths[i + 1], widths[i]) for i in range(len(widths) - 1))
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for i in reversed(range(len(self.up))):
            x = F.interpolate(x, size=skips[i].shape[-2:], mode="bilinear", align_corners=False)
            x = self.up[i](torch.cat([skips[i], x], dim=1))
        return self.head(x)


class _DeepLab(nn.Module):
    """torchvision's DeepLabV3 returning a plain logits tensor."""

    def __init__(self, num_classes: int):
        super().__init__()
        try:
            from torchvision.models.segmentation import deeplabv3_resnet50
        except Exception as exc:  # ImportError, or a torchvision built for another torch
            raise ConfigError.with_params("{arch} deeplabv3 needs torchvision, which does not import here ({why}); "
                                          "use {arch} unet",
                                          why=f"{type(exc).__name__}: {' '.join(str(exc).split())[:120]}") from None
        # weights=None: nothing is downloaded; the backbone trains from scratch like the UNet.
        self.net = deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)["out"]


def build_segmenter(name: str, num_classes: int, width: int = 16) -> nn.Module:
    """`unet` (TinyUNet, widths width, 2 width, 4 width) or `deeplabv3` (needs torchvision)."""
    if name == "unet":
        return TinyUNet(num_classes, (width, 2 * width, 4 * width))
    if name == "deeplabv3":
        return _DeepLab(num_classes)
    raise ConfigError.with_params(f"{{arch}}: expected one of {', '.join(SEGMENTERS)}, got {{value}}", value=repr(name))


@dataclass
class SegSettings:
    arch: str = "unet"
    steps: int = 1000
    batch_size: int = 16
    lr: float = 3e-3
    width: int = 16
    # Train on random crop x crop windows of the evaluation-size images (the UNet is fully
    # convolutional and predicts whole images): a quarter of the pixels per step, so four
    # times the iterations fit the same CPU time. 0 = whole images.
    crop: int = 64
    # Share of crops centred on a defect pixel: defects cover ~1 % of the pixels, and uniform
    # crops would show most batches no defect at all.
    defect_crop_share: float = 0.5
    # Share of the last steps that draw from the real pairs alone: train on the mix, then
    # finish (at the one-cycle schedule's low learning rate) on the distribution the
    # segmenter is tested on. 0 = the mix to the end. No effect on a real-only set.
    real_finish: float = 0.0
    # Share of each batch drawn from the real pairs, however many synthetic pairs there are
    # (0 = draw uniformly from the union, so the real share falls as 1 / (1 + ratio)). Keeps
    # more synthetic pairs from crowding out the pairs the segmenter is tested on.
    real_share: float = 0.0


def to_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, S, S) -> float in [-1, 1]."""
    return images.float() / 127.5 - 1.0


def class_weights(masks: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Cross-entropy weights ~ 1 / sqrt(pixel frequency), normalised to background = 1.

    The square root keeps rare classes (blowholes: 0.1 % of the pixels) from dominating with
    weights in the hundreds, which makes the segmenter paint defects everywhere.
    """
    counts = torch.bincount(masks.reshape(-1).long(), minlength=num_classes).double().clamp(min=1)
    w = (counts / counts.sum()).rsqrt()
    return (w / w[0]).float()


def _loss(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Class-weighted cross-entropy + soft Dice over the defect classes (1..K)."""
    ce = F.cross_entropy(logits, target, weight=weights)
    prob = logits.softmax(1)[:, 1:]
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2)[:, 1:].float()
    inter = (prob * onehot).sum((0, 2, 3))
    denom = prob.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    dice = 1.0 - (2 * inter + 1.0) / (denom + 1.0)
    return ce + dice.mean()


def _flip(x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random horizontal / vertical flips, the same for image and mask."""
    for dim in (-1, -2):
        f = torch.rand(len(x), generator=g) < 0.5
        x = torch.where(f[:, None, None, None], x.flip(dim), x)
        y = torch.where(f[:, None, None], y.flip(dim), y)
    return x, y


def _crops(images: torch.Tensor, masks: torch.Tensor, idx: torch.Tensor, settings: SegSettings,
           g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """crop x crop windows of the pairs `idx`: centred on a random defect pixel with probability
    `defect_crop_share` (when the pair has one), anywhere otherwise; clipped to the image."""
    c, size = settings.crop, images.shape[-1]
    if c <= 0 or c >= size:
        return images[idx], masks[idx]
    xs, ys = [], []
    for i in idx.tolist():
        top, left = torch.randint(size - c + 1, (2,), generator=g).tolist()
        defect = torch.nonzero(masks[i])
        if len(defect) and float(torch.rand(1, generator=g)) < settings.defect_crop_share:
            pick = int(torch.randint(len(defect), (1,), generator=g))
            top, left = crop_origin(defect[pick].tolist(), size, size, c)
        xs.append(images[i, :, top:top + c, left:left + c])
        ys.append(masks[i, top:top + c, left:left + c])
    return torch.stack(xs), torch.stack(ys)


def _draw(pool: int, num_real: int | None, settings: SegSettings, g: torch.Generator) -> torch.Tensor:
    """A batch of pair indices from the first `pool` pairs (the real ones first): uniform, or with
    `real_share` of the entries (in expectation) real when synthetic pairs are in the pool."""
    n = settings.batch_size
    if not settings.real_share or num_real is None or pool <= num_real:
        return torch.randint(pool, (n,), generator=g)
    real = torch.rand(n, generator=g) < settings.real_share
    return torch.where(real, torch.randint(num_real, (n,), generator=g),
                       num_real + torch.randint(pool - num_real, (n,), generator=g))


def train_segmenter(images: torch.Tensor, masks: torch.Tensor, num_classes: int, settings: SegSettings,
                    seed: int, num_real: int | None = None) -> nn.Module:
    """Train a fresh segmenter on uint8 images (N, 3, S, S) and class-index masks (N, S, S),
    whose first `num_real` pairs (None: all) are real: the last `settings.real_finish` share
    of the steps draws from those alone."""
    torch.manual_seed(seed)  # initial weights
    g = torch.Generator().manual_seed(seed)  # batches, crops and flips
    model = build_segmenter(settings.arch, num_classes, settings.width)
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=1e-4)
    sched = _one_cycle(opt, settings)
    weights = class_weights(masks, num_classes)
    model.train()
    finish_from = settings.steps - round(settings.real_finish * settings.steps)
    for step in range(settings.steps):
        pool = len(images) if num_real is None or step < finish_from else num_real
        idx = _draw(pool, num_real, settings, g)
        x, y = _crops(images, masks, idx, settings, g)
        x, y = _flip(to_input(x), y.long(), g)
        loss = _loss(model(x), y, weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
    return model.eval()


def _one_cycle(opt, settings: SegSettings):
    """One-cycle learning rate: a tenth of the steps warming up, the rest annealing. torch's
    schedule divides by the warm-up's length, 0.1 x steps - 1: zero at 10 steps (a
    ZeroDivisionError), negative below. Up to 10 steps the warm-up takes 1.5 steps instead, and
    a single step keeps the rate constant."""
    if settings.steps < 2:
        return None
    pct = 0.1 if settings.steps > 10 else 1.5 / settings.steps
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=settings.lr, total_steps=settings.steps, pct_start=pct)


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """Class-index predictions (N, S, S) for uint8 images (N, 3, S, S)."""
    model.eval()
    out = [model(to_input(images[i:i + batch_size])).argmax(1) for i in range(0, len(images), batch_size)]
    return torch.cat(out) if out else torch.zeros(0, *images.shape[-2:], dtype=torch.long)
