"""The published implementation's training step, re-created on this project's network, timed
against this project's step by `bench_reference.py` beside this file.

The published Defect-Gen trains with a loop built on guided-diffusion's UNet. Per step it
(train.py, diffusion/base_diffusion.py, models/unet/openaiunet.py):
- noises the batch (`q_sample`) and takes a plain MSE between the network output and x0;
- runs fp32, with `torch.optim.AdamW` in its default per-parameter form on the CPU (no
  foreach, no fused kernel), and no gradient clipping;
- computes attention the "legacy" way (heads split before q, k, v; two einsums and a
  softmax in fp32) and recomputes every attention block in the backward pass: its
  AttentionBlock always passes `flag=True` to its checkpoint helper, whatever
  `use_checkpoint` says.
It also updates an EMA one parameter at a time after each step; that is left out here,
which makes the reference faster, not slower, so ratios against it are conservative.

Weights, shapes and the forward computation are the project's own (`build_unet`): both
steps compute the same function, so the timing difference is how they compute it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from defect_gen.config import Config
from defect_gen.core.diffusion import GaussianDiffusion
from defect_gen.core.unet import AttentionBlock, UNetModel, build_unet


class PublishedAttention(AttentionBlock):
    """AttentionBlock computed as the published code does: legacy QKV attention with
    einsum + softmax, the whole block recomputed in the backward pass."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and torch.is_grad_enabled():
            return checkpoint(self._legacy, x, use_reentrant=False)
        return self._legacy(x)

    def _legacy(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(x))
        length, ch = qkv.shape[-1], c // self.num_heads
        q, k, v = qkv.reshape(b * self.num_heads, 3 * ch, length).split(ch, dim=1)
        scale = 1 / math.sqrt(math.sqrt(ch))  # scaling q and k each is more stable than scaling after
        weight = torch.einsum("bct,bcs->bts", q * scale, k * scale)
        weight = torch.softmax(weight.float(), dim=-1).type(weight.dtype)
        h = torch.einsum("bts,bcs->bct", weight, v).reshape(b, c, length)
        return (x + self.proj_out(h)).reshape(b, c, *spatial)


def published_network(cfg: Config) -> UNetModel:
    """cfg's network with every AttentionBlock replaced by PublishedAttention (same weights)."""
    model = build_unet(cfg.model, cfg.num_defect)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is AttentionBlock:
                new = PublishedAttention(child.qkv.in_channels, child.num_heads, -1, use_checkpoint=False)
                new.load_state_dict(child.state_dict())
                setattr(parent, name, new)
    return model


class ReferenceStep:
    """One published-style training step (forward, MSE to x0, backward, per-parameter AdamW)
    on a fixed batch; call it to run a step."""

    def __init__(self, cfg: Config, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor):
        self.model = published_network(cfg).to(x0.device).train()
        # The published optimizer settings (config/*_recep.yml): lr 1e-4, weight decay 0.002.
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4, weight_decay=0.002, foreach=False,
                                     fused=False)
        self.diffusion = GaussianDiffusion.from_config(cfg.diffusion)
        self.x0, self.t, self.noise = x0, t, noise

    def __call__(self) -> None:
        x_t = self.diffusion.q_sample(self.x0, self.t, self.noise)
        loss = F.mse_loss(self.model(x_t, self.t), self.x0)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
